//! Dead letters explained: each error text is sorted into a reason with a title and the
//! fix in plain words (French and English). Unknown errors are grouped by their text
//! with numbers and identifiers blanked, so similar failures still land together.

use super::i18n::Lang;

/// Why an event could not be delivered, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// Stable key of the group (used by "re-drive this group").
    pub key: String,
    pub title_fr: String,
    pub title_en: String,
    pub fix_fr: String,
    pub fix_en: String,
}

impl Reason {
    #[must_use]
    pub fn title(&self, lang: Lang) -> &str {
        lang.t(&self.title_fr, &self.title_en)
    }

    #[must_use]
    pub fn fix(&self, lang: Lang) -> &str {
        lang.t(&self.fix_fr, &self.fix_en)
    }
}

/// A known failure: words that identify it, then what it means and how to fix it.
struct Known {
    key: &'static str,
    any_of: &'static [&'static str],
    title: (&'static str, &'static str),
    fix: (&'static str, &'static str),
}

const KNOWN: &[Known] = &[
    Known {
        key: "employee-unmapped",
        any_of: &["sans salarié", "is unmapped", "sans correspondance"],
        title: (
            "Salarié BatiSimply sans correspondance dans Batigest",
            "BatiSimply user without a Batigest employee",
        ),
        fix: (
            "Renseigner Salarie.codebs (l'identifiant BatiSimply) sur la fiche du salarié dans \
             Batigest, puis relancer ces heures.",
            "Fill Salarie.codebs (the BatiSimply id) on the employee's record in Batigest, then \
             re-drive these hours.",
        ),
    },
    Known {
        key: "employee-ambiguous",
        any_of: &["plusieurs salariés", "several employees"],
        title: (
            "Même identifiant BatiSimply sur plusieurs salariés",
            "Same BatiSimply id on several employees",
        ),
        fix: (
            "Ne garder l'identifiant (Salarie.codebs) que sur un seul salarié dans Batigest, puis \
             relancer.",
            "Keep the id (Salarie.codebs) on one employee only in Batigest, then re-drive.",
        ),
    },
    Known {
        key: "too-long",
        any_of: &["caractères pour", "characters, at most"],
        title: ("Valeur trop longue", "Value too long"),
        fix: (
            "Raccourcir la valeur dans la fiche chantier Batigest : la correction est envoyée \
             toute seule. Relancer n'est utile qu'après la correction.",
            "Shorten the value on the Batigest job site: the correction is sent by itself. \
             Re-driving only helps after the fix.",
        ),
    },
    Known {
        key: "unknown-project",
        any_of: &["projet inconnu", "unknown project", "projectcode"],
        title: (
            "Chantier inconnu de BatiSimply",
            "Job site unknown to BatiSimply",
        ),
        fix: (
            "Vérifier que le chantier existe dans BatiSimply (flux chantiers) avec son \
             projectCode (le code chantier Batigest) : les heures en attente repartent seules \
             dès que le lien existe.",
            "Check that the job site exists in BatiSimply (chantiers flow) with its projectCode \
             (the Batigest chantier code): waiting hours go again by themselves once linked.",
        ),
    },
    Known {
        key: "suivimo-collision",
        any_of: &["collision", "lignes suivimo pour"],
        title: (
            "Deux heures pour la même ligne SuiviMO",
            "Two time slots for one SuiviMO row",
        ),
        fix: (
            "Deux créneaux (ou un créneau et une saisie Batigest) tombent sur le même chantier, \
             salarié et heure de début : corriger l'un des deux (dans BatiSimply ou Batigest), \
             puis relancer.",
            "Two slots (or a slot and a Batigest entry) fall on the same chantier, employee and \
             start: fix one of them (in BatiSimply or Batigest), then re-drive.",
        ),
    },
    Known {
        key: "credentials",
        any_of: &[
            "401",
            "403",
            "identifiants",
            "credentials",
            "invalid_grant",
            "unauthorized",
        ],
        title: (
            "Accès refusé (identifiants)",
            "Access refused (credentials)",
        ),
        fix: (
            "Vérifier l'identifiant et le mot de passe BatiSimply (page Configuration, bouton \
             « Tester »), puis relancer tout le groupe.",
            "Check the BatiSimply client and password (Settings page, \"Test\" button), then \
             re-drive the whole group.",
        ),
    },
    Known {
        key: "gave-up",
        any_of: &["abandonné après", "gave up after"],
        title: (
            "Pas de réponse pendant trop longtemps",
            "No answer for too long",
        ),
        fix: (
            "Un système était injoignable pendant les essais. Vérifier les voyants de connexion \
             (page Actions, « Tester les connexions ») puis relancer tout le groupe.",
            "A system was unreachable during the attempts. Check the connection lights (Actions \
             page, \"Test the connections\") then re-drive the whole group.",
        ),
    },
    Known {
        key: "refused",
        any_of: &[
            "refused the request",
            "a refusé",
            "400",
            "422",
            "invalide",
            "invalid",
        ],
        title: ("Donnée refusée par la cible", "Data refused by the target"),
        fix: (
            "Lire le détail de l'erreur, corriger la donnée dans Batigest (ou BatiSimply pour \
             les heures) ; la correction repart seule. Relancer si la cause était passagère.",
            "Read the error detail, correct the data in Batigest (or BatiSimply for hours); the \
             correction is sent by itself. Re-drive if the cause was temporary.",
        ),
    },
];

/// The reason of an error text.
#[must_use]
pub fn classify(error: &str) -> Reason {
    let lower = error.to_lowercase();
    if let Some(known) = KNOWN
        .iter()
        .find(|k| k.any_of.iter().any(|w| lower.contains(w)))
    {
        return Reason {
            key: known.key.to_owned(),
            title_fr: known.title.0.to_owned(),
            title_en: known.title.1.to_owned(),
            fix_fr: known.fix.0.to_owned(),
            fix_en: known.fix.1.to_owned(),
        };
    }
    let shape = shape_of(error);
    Reason {
        key: format!("other:{shape}"),
        title_fr: shape.clone(),
        title_en: shape,
        fix_fr: "Lire le détail de l'erreur ; corriger la cause puis relancer.".to_owned(),
        fix_en: "Read the error detail; fix the cause, then re-drive.".to_owned(),
    }
}

/// The first line of an error with digits, quoted values and hex ids blanked, at most
/// 100 characters: similar errors share a shape.
#[must_use]
pub fn shape_of(error: &str) -> String {
    let first = error.lines().next().unwrap_or_default();
    let mut shape = String::with_capacity(first.len());
    let mut in_quotes = false;
    for c in first.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                if in_quotes {
                    shape.push_str("\"…\"");
                }
            }
            _ if in_quotes => {}
            '0'..='9' => {
                if !shape.ends_with('#') {
                    shape.push('#');
                }
            }
            _ => shape.push(c),
        }
    }
    let shape: String = shape.chars().take(100).collect();
    if shape.trim().is_empty() {
        "(sans message / no message)".to_owned()
    } else {
        shape
    }
}

/// The BatiSimply user id an "unmapped user" error names (`utilisateur BatiSimply <id>
/// sans salarié`, or `user <id> is unmapped`), if any.
#[must_use]
pub fn unmapped_user_id(error: &str) -> Option<String> {
    let after = |marker: &str| {
        error.find(marker).map(|i| {
            error[i + marker.len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .to_owned()
        })
    };
    after("utilisateur BatiSimply ")
        .or_else(|| after("BatiSimply user "))
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmapped_employee_is_explained_with_the_codebs_fix() {
        let text = "utilisateur BatiSimply 3f2a-77 sans salarié : renseigner Salarie.codebs pour \
                    cet utilisateur / BatiSimply user 3f2a-77 is unmapped";
        let reason = classify(text);
        assert_eq!(reason.key, "employee-unmapped");
        assert!(reason.fix(Lang::Fr).contains("Salarie.codebs"));
        assert_eq!(unmapped_user_id(text).as_deref(), Some("3f2a-77"));
    }

    #[test]
    fn a_long_customer_name_is_a_too_long_value() {
        let reason =
            classify("customer_name: 45 caractères pour 30 au plus / 45 characters, at most 30");
        assert_eq!(reason.key, "too-long");
    }

    #[test]
    fn unknown_errors_group_by_shape() {
        let a = classify("disk 12 is full at \"X1\"");
        let b = classify("disk 7 is full at \"Y22\"");
        assert_eq!(a.key, b.key);
        assert_eq!(a.title_en, "disk # is full at \"…\"");
        assert_ne!(a.key, classify("something else").key);
    }
}
