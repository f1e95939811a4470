//! Dead letters explained: each stored reason code (see [`crate::outbox::reason`]) has
//! a title and the fix in plain words (French and English). Dead letters without a known
//! code are grouped by their message with numbers and identifiers blanked, so similar
//! failures still land together. Nothing here reads a decision out of a message.

use super::i18n::Lang;
use crate::outbox::{Reason, ReasonCode};

/// Why an event could not be delivered, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Stable key of the group (used by "re-drive this group"): the reason code, or
    /// `other:<shape of the message>`.
    pub key: String,
    pub title_fr: String,
    pub title_en: String,
    pub fix_fr: String,
    pub fix_en: String,
}

impl Explanation {
    #[must_use]
    pub fn title(&self, lang: Lang) -> &str {
        lang.t(&self.title_fr, &self.title_en)
    }

    #[must_use]
    pub fn fix(&self, lang: Lang) -> &str {
        lang.t(&self.fix_fr, &self.fix_en)
    }
}

/// A known reason: what it means and how to fix it.
struct Known {
    code: ReasonCode,
    title: (&'static str, &'static str),
    fix: (&'static str, &'static str),
}

const KNOWN: &[Known] = &[
    Known {
        code: ReasonCode::EmployeeUnmapped,
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
        code: ReasonCode::EmployeeAmbiguous,
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
        code: ReasonCode::TooLong,
        title: ("Valeur trop longue", "Value too long"),
        fix: (
            "Raccourcir la valeur dans la fiche chantier Batigest : la correction est envoyée \
             toute seule. Relancer n'est utile qu'après la correction.",
            "Shorten the value on the Batigest job site: the correction is sent by itself. \
             Re-driving only helps after the fix.",
        ),
    },
    Known {
        code: ReasonCode::UnknownChantier,
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
        code: ReasonCode::SuivimoCollision,
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
        code: ReasonCode::SuivimoDuplicates,
        title: (
            "Plusieurs lignes SuiviMO pour un créneau",
            "Several SuiviMO rows for one time slot",
        ),
        fix: (
            "Plusieurs lignes SuiviMO ont le chantier, le salarié et l'heure de début de ce \
             créneau : n'en garder qu'une dans Batigest, puis relancer.",
            "Several SuiviMO rows share this slot's chantier, employee and start: keep one in \
             Batigest, then re-drive.",
        ),
    },
    Known {
        code: ReasonCode::InvalidData,
        title: ("Donnée inutilisable", "Unusable data"),
        fix: (
            "Lire le détail de l'erreur (le champ est nommé) et corriger la donnée à la \
             source (Batigest pour les chantiers, BatiSimply pour les heures) : la correction \
             repart seule.",
            "Read the error detail (it names the field) and correct the data at its source \
             (Batigest for job sites, BatiSimply for hours): the correction is sent by itself.",
        ),
    },
    Known {
        code: ReasonCode::Credentials,
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
        code: ReasonCode::GaveUp,
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
        code: ReasonCode::Refused,
        title: ("Donnée refusée par la cible", "Data refused by the target"),
        fix: (
            "Lire le détail de l'erreur, corriger la donnée dans Batigest (ou BatiSimply pour \
             les heures) ; la correction repart seule. Relancer si la cause était passagère.",
            "Read the error detail, correct the data in Batigest (or BatiSimply for hours); the \
             correction is sent by itself. Re-drive if the cause was temporary.",
        ),
    },
];

/// The explanation of a dead letter: its reason code, else (`other`, or dead letters
/// older than stored reasons) the shape of its message.
#[must_use]
pub fn explain(reason: &Reason, message: &str) -> Explanation {
    if let Some(known) = KNOWN.iter().find(|k| k.code == reason.code) {
        return Explanation {
            key: known.code.as_str().to_owned(),
            title_fr: known.title.0.to_owned(),
            title_en: known.title.1.to_owned(),
            fix_fr: known.fix.0.to_owned(),
            fix_en: known.fix.1.to_owned(),
        };
    }
    let shape = shape_of(message);
    Explanation {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_but_other_has_its_own_explanation() {
        for code in ReasonCode::ALL {
            let explained = explain(&Reason::new(code), "anything");
            if code == ReasonCode::Other {
                assert!(explained.key.starts_with("other:"));
            } else {
                assert_eq!(explained.key, code.as_str());
                assert!(!explained.fix(Lang::Fr).is_empty());
            }
        }
    }

    #[test]
    fn an_unmapped_employee_is_explained_with_the_codebs_fix() {
        let reason = Reason::new(ReasonCode::EmployeeUnmapped).with("user_id", "3f2a-77");
        let explained = explain(&reason, "reworded at will");
        assert_eq!(explained.key, "employee-unmapped");
        assert!(explained.fix(Lang::Fr).contains("Salarie.codebs"));
    }

    #[test]
    fn a_refusal_naming_401_in_its_key_is_not_a_credentials_problem() {
        let reason = Reason::new(ReasonCode::Refused)
            .with("key", "00000401")
            .with("status", 422);
        let message = "chantier \"00000401\": BatiSimply refused the request (422)";
        assert_eq!(explain(&reason, message).key, "refused");
    }

    #[test]
    fn other_reasons_group_by_shape() {
        let other = Reason::new(ReasonCode::Other);
        let a = explain(&other, "disk 12 is full at \"X1\"");
        let b = explain(&other, "disk 7 is full at \"Y22\"");
        assert_eq!(a.key, b.key);
        assert_eq!(a.title_en, "disk # is full at \"…\"");
        assert_ne!(a.key, explain(&other, "something else").key);
    }
}
