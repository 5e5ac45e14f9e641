//! Applying the roles (and tablespaces) saved by `pg_dumpall --globals-only` before a
//! restore, without touching what already exists: statements about an existing role or
//! tablespace are skipped, so a restore never resets a live role's password or attributes.
//! Statements are split here rather than fed to psql, because psql would run them all.

use std::collections::HashSet;

/// What a globals statement is about, as far as skipping goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    /// CREATE / ALTER / COMMENT ON ROLE, and membership grants (keyed by the member).
    Role(String),
    Tablespace(String),
    /// Session settings and anything else: always applied.
    Other,
}

/// The statements to run, and the names of the existing roles and tablespaces left alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GlobalsPlan {
    pub statements: Vec<String>,
    /// The roles the statements create, in order.
    pub creates_roles: Vec<String>,
    pub kept_existing: Vec<String>,
}

impl GlobalsPlan {
    /// Leaves out every statement about a tablespace (a scratch server has none of the
    /// original directories; pg_restore runs with `--no-tablespaces` there).
    pub fn drop_tablespaces(&mut self) {
        self.statements
            .retain(|statement| !matches!(subject(statement), Subject::Tablespace(_)));
    }
}

/// Chooses what to apply from a globals script, given the roles and tablespaces the target
/// server already has.
pub fn plan(sql: &str, roles: &HashSet<String>, tablespaces: &HashSet<String>) -> GlobalsPlan {
    let mut out = GlobalsPlan::default();
    for statement in split_statements(sql) {
        let existing = match subject(&statement) {
            Subject::Role(name) if roles.contains(&name) => Some(name),
            Subject::Tablespace(name) if tablespaces.contains(&name) => Some(name),
            _ => None,
        };
        match existing {
            Some(name) => {
                if !out.kept_existing.contains(&name) {
                    out.kept_existing.push(name);
                }
            }
            None => {
                if let (true, Subject::Role(name)) = (
                    statement.to_ascii_uppercase().starts_with("CREATE ROLE "),
                    subject(&statement),
                ) {
                    out.creates_roles.push(name);
                }
                out.statements.push(statement);
            }
        }
    }
    out
}

/// Splits SQL into statements at top-level `;`, honouring quotes and `--` comments, and
/// dropping psql meta-commands (`\restrict ...`) that pg_dumpall adds.
fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            current.push(c);
            if c == q {
                // A doubled quote is an escaped quote inside the literal.
                if chars.peek() == Some(&q) {
                    current.push(chars.next().expect("peeked"));
                } else {
                    quote = None;
                }
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                current.push(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\\' if current.trim().is_empty() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' => {
                let statement = current.trim();
                if !statement.is_empty() {
                    statements.push(format!("{statement};"));
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    statements
}

fn subject(statement: &str) -> Subject {
    let words = Words(statement);
    let upper = statement.to_ascii_uppercase();
    let after = |prefix: &str| words.identifier_after(prefix.len());
    for prefix in ["CREATE ROLE ", "ALTER ROLE ", "COMMENT ON ROLE "] {
        if upper.starts_with(prefix) {
            return after(prefix).map_or(Subject::Other, Subject::Role);
        }
    }
    for prefix in [
        "CREATE TABLESPACE ",
        "ALTER TABLESPACE ",
        "COMMENT ON TABLESPACE ",
    ] {
        if upper.starts_with(prefix) {
            return after(prefix).map_or(Subject::Other, Subject::Tablespace);
        }
    }
    if upper.starts_with("GRANT ") || upper.starts_with("REVOKE ") {
        if let Some(at) = upper.find(" ON TABLESPACE ") {
            return words
                .identifier_after(at + " ON TABLESPACE ".len())
                .map_or(Subject::Other, Subject::Tablespace);
        }
        // Role membership: `GRANT role TO member ...` changes the member.
        if let Some(at) = upper.find(" TO ") {
            return words
                .identifier_after(at + " TO ".len())
                .map_or(Subject::Other, Subject::Role);
        }
    }
    Subject::Other
}

struct Words<'a>(&'a str);

impl Words<'_> {
    /// The identifier starting at byte `at`: `"quoted ""name"""` or a bare word.
    fn identifier_after(&self, at: usize) -> Option<String> {
        let rest = self.0.get(at..)?.trim_start();
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                    } else {
                        return Some(name);
                    }
                }
                name.push(c);
            }
            None
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ';')
                .collect();
            // Unquoted identifiers fold to lower case.
            (!name.is_empty()).then(|| name.to_lowercase())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOBALS: &str = r#"--
-- PostgreSQL database cluster dump
--

\restrict 6bzwrevneWhf7HIo0QvwMWKeaOQ7Qb1p0SkPupfiGSuLw4Zte0MLTSfIK0eKgAP

SET default_transaction_read_only = off;

CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOLOGIN PASSWORD 'SCRAM-SHA-256$4096:a;b';
COMMENT ON ROLE app_owner IS 'multi
line; with a semicolon and a '' quote';
CREATE ROLE "équipe-analyse";
ALTER ROLE "équipe-analyse" WITH NOLOGIN;
GRANT app_owner TO "équipe-analyse" GRANTED BY postgres;
GRANT app_owner TO postgres GRANTED BY postgres;
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';
GRANT CREATE ON TABLESPACE fast TO app_owner;

\unrestrict 6bzwrevneWhf7HIo0QvwMWKeaOQ7Qb1p0SkPupfiGSuLw4Zte0MLTSfIK0eKgAP
"#;

    #[test]
    fn existing_roles_and_tablespaces_are_left_alone() {
        let roles: HashSet<String> = ["postgres".to_string()].into();
        let tablespaces: HashSet<String> = ["fast".to_string()].into();
        let plan = plan(GLOBALS, &roles, &tablespaces);
        assert_eq!(
            plan.statements,
            vec![
                "SET default_transaction_read_only = off;",
                "CREATE ROLE app_owner;",
                "ALTER ROLE app_owner WITH NOLOGIN PASSWORD 'SCRAM-SHA-256$4096:a;b';",
                "COMMENT ON ROLE app_owner IS 'multi\nline; with a semicolon and a '' quote';",
                "CREATE ROLE \"équipe-analyse\";",
                "ALTER ROLE \"équipe-analyse\" WITH NOLOGIN;",
                "GRANT app_owner TO \"équipe-analyse\" GRANTED BY postgres;",
            ]
        );
        assert_eq!(plan.kept_existing, vec!["postgres", "fast"]);
        assert_eq!(plan.creates_roles, vec!["app_owner", "équipe-analyse"]);
    }

    #[test]
    fn on_an_empty_server_everything_but_meta_commands_applies() {
        let plan = plan(GLOBALS, &HashSet::new(), &HashSet::new());
        assert_eq!(plan.statements.len(), 12);
        assert!(plan.statements.iter().all(|s| !s.contains("restrict")));
        assert!(plan.kept_existing.is_empty());
    }
}
