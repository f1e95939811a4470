//! The one write batisync makes to `Salarie`: an employee's BatiSimply id, set from the
//! console when `admin.allow_codebs_write` is on (statement in `tsql`).

use super::error::BatigestError;
use super::pool::Pool;
use super::spec::TableSpec;
use super::tsql;

/// Sets (`Some`) or clears (`None`) the BatiSimply id of employee `code`; returns the
/// rows changed (0: no such employee).
///
/// # Errors
/// [`BatigestError::Mapping`] when the mapping has no BatiSimply id column; connection,
/// permission (the login needs `UPDATE` on the column) or server errors otherwise.
#[tracing::instrument(skip_all, fields(code), err)]
pub async fn set_batisimply_id(
    pool: &Pool,
    spec: &TableSpec,
    code: &str,
    id: Option<&str>,
) -> Result<u64, BatigestError> {
    let sql = tsql::employee_set_batisimply_id(spec).ok_or_else(|| {
        BatigestError::Mapping("the Salarie mapping has no BatiSimply id column".into())
    })?;
    let (code, id) = (code.to_owned(), id.map(str::to_owned));
    pool.run("set an employee's BatiSimply id", |client, pool| {
        let (sql, code, id) = (sql.clone(), code.clone(), id.clone());
        Box::pin(async move { pool.execute(client, &sql, &[&id, &code]).await })
    })
    .await
}
