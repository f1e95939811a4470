//! Mapping verification against a Batigest-shaped column list.

use super::*;

fn col(table: &str, column: &str, data_type: &str, max_chars: Option<i32>) -> ServerColumn {
    ServerColumn {
        table: table.into(),
        column: column.into(),
        data_type: data_type.into(),
        max_chars,
        nullable: true,
        has_default: false,
        generated: false,
    }
}

/// The columns of `sql/mssql/batigest_test_schema.sql`.
fn batigest() -> Vec<ServerColumn> {
    vec![
        col("ChantierDef", "Code", "varchar", Some(8)),
        col("ChantierDef", "NomClient", "varchar", Some(30)),
        col("ChantierDef", "Libelle", "varchar", Some(60)),
        col("ChantierDef", "Etat", "char", Some(1)),
        col("ChantierDef", "DateDebut", "datetime", None),
        col("ChantierDef", "DateFin", "datetime", None),
        col("ChantierDef", "CodeClient", "varchar", Some(10)),
        col("ChantierDef", "AdrChantier", "varchar", Some(60)),
        col("ChantierDef", "CPChantier", "varchar", Some(10)),
        col("ChantierDef", "VilleChantier", "varchar", Some(40)),
        col("Salarie", "Code", "varchar", Some(10)),
        col("Salarie", "Nom", "varchar", Some(40)),
        col("Salarie", "codebs", "varchar", Some(50)),
        col("SuiviMO", "CodeChantier", "varchar", Some(8)),
        col("SuiviMO", "CodeSalarie", "varchar", Some(10)),
        col("SuiviMO", "Date", "datetime", None),
        col("SuiviMO", "NbH0", "decimal", None),
        col("SuiviMO", "NbH3", "decimal", None),
        col("SuiviMO", "NbH4", "decimal", None),
    ]
}

fn settings() -> BatigestSettings {
    BatigestSettings {
        database: "BTG".into(),
        ..BatigestSettings::default()
    }
}

#[test]
fn the_default_mapping_resolves_on_a_batigest_schema() {
    let mapping = verify_mapping(&settings(), &batigest()).expect("valid mapping");
    assert!(mapping.warnings.is_empty(), "{:?}", mapping.warnings);
    assert_eq!(mapping.chantier.source, "batigest:dbo.ChantierDef");
    assert_eq!(mapping.chantier.key.quoted(), "[Code]");
    let roles: Vec<&str> = mapping.chantier.columns.iter().map(|c| c.role).collect();
    assert_eq!(
        roles,
        [
            "code",
            "customer_name",
            "label",
            "state",
            "start_date",
            "end_date",
            "street",
            "postcode",
            "city"
        ]
    );
    assert_eq!(mapping.ledger.meal.quoted(), "[NbH4]");
    assert_eq!(
        (
            mapping.ledger.chantier_code_chars,
            mapping.ledger.employee_code_chars
        ),
        (8, 10)
    );
}

#[test]
fn names_are_matched_case_insensitively_with_the_server_spelling() {
    let mut s = settings();
    s.salarie.batisimply_id = "CODEBS".into();
    let mapping = verify_mapping(&s, &batigest()).expect("valid mapping");
    assert_eq!(mapping.salarie.columns[2].column.quoted(), "[codebs]");
}

#[test]
fn problems_name_table_column_setting_and_expectation() {
    let mut s = settings();
    s.chantier.customer_name = "NomDuClient".into();
    s.chantier.start_date = "CodeClient".into();
    let problems = verify_mapping(&s, &batigest()).expect_err("two problems");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with("dbo.ChantierDef.NomDuClient (batigest.chantier.customer_name)"),
        "{}",
        text[0]
    );
    assert!(text[0].contains("does not exist"), "{}", text[0]);
    assert!(
        text[1].contains("dbo.ChantierDef.CodeClient")
            && text[1].contains("expected a Date type, found varchar"),
        "{}",
        text[1]
    );
}

#[test]
fn lengths_are_checked() {
    let mut columns = batigest();
    columns[1] = col("ChantierDef", "NomClient", "varchar", Some(40));
    let mapping = verify_mapping(&settings(), &columns).expect("a warning only");
    assert_eq!(mapping.warnings.len(), 1);
    assert!(
        mapping.warnings[0]
            .to_string()
            .contains("values over 30 will be rejected")
    );

    columns[12] = col("Salarie", "codebs", "varchar", Some(20));
    let problems = verify_mapping(&settings(), &columns).expect_err("too short for a UUID");
    assert!(
        problems
            .iter()
            .any(|p| p.fatal && p.setting == "salarie.batisimply_id")
    );
}

#[test]
fn a_missing_table_is_reported() {
    let columns: Vec<ServerColumn> = batigest()
        .into_iter()
        .filter(|c| c.table != "SuiviMO")
        .collect();
    let problems = verify_mapping(&settings(), &columns).expect_err("no ledger");
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0]
            .to_string()
            .starts_with("dbo.SuiviMO (batigest.suivi_mo.table)")
    );
}

fn required(table: &str, column: &str, data_type: &str, max_chars: Option<i32>) -> ServerColumn {
    ServerColumn {
        nullable: false,
        ..col(table, column, data_type, max_chars)
    }
}

#[test]
fn a_not_null_ledger_column_nobody_fills_blocks_until_a_default_is_set() {
    let mut columns = batigest();
    columns.push(ServerColumn {
        generated: true,
        ..required("SuiviMO", "Id", "int", None)
    });
    columns.push(ServerColumn {
        has_default: true,
        ..required("SuiviMO", "NbH1", "decimal", None)
    });
    columns.push(required("SuiviMO", "Periode", "varchar", Some(6)));
    let problems = verify_mapping(&settings(), &columns).expect_err("blocked");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].starts_with("dbo.SuiviMO.Periode (batigest.suivimo_defaults)")
            && text[0].contains("NOT NULL"),
        "{text:?}"
    );

    let mut s = settings();
    s.suivimo_defaults
        .insert("Periode".into(), DefaultValue::Text("2026111".into()));
    let problems = verify_mapping(&s, &columns).expect_err("too long");
    assert!(problems[0].message.contains("holds 6"), "{problems:?}");
    s.suivimo_defaults
        .insert("Periode".into(), DefaultValue::Int(202_611));
    assert!(
        verify_mapping(&s, &columns).is_err(),
        "a number in a varchar"
    );
    s.suivimo_defaults
        .insert("Periode".into(), DefaultValue::Text("202611".into()));
    let mapping = verify_mapping(&s, &columns).expect("filled by the default");
    assert_eq!(mapping.ledger.extra.len(), 1);
    assert_eq!(mapping.ledger.extra[0].0.quoted(), "[Periode]");

    s.suivimo_defaults.insert("Id".into(), DefaultValue::Int(1));
    let problems = verify_mapping(&s, &columns).expect_err("identity");
    assert!(
        problems.iter().any(|p| p.message.contains("IDENTITY")),
        "{problems:?}"
    );
    s.suivimo_defaults.clear();
    s.suivimo_defaults
        .insert("Absent".into(), DefaultValue::Int(1));
    assert!(verify_mapping(&s, &columns).is_err());
}
