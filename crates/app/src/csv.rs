//! CSV output shared by the exports (audit trail, compliance reports).

/// Appends one field. A value a spreadsheet would run as a formula (starting
/// with `=`, `+`, `-`, `@`, tab or carriage return: user agents, names and
/// ids can be attacker text) gets a leading `'` (OWASP's CSV-injection
/// advice); a value holding a separator, quote or line break is quoted.
pub fn field(out: &mut String, value: &str) {
    let guarded;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{value}");
        guarded.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Appends a line of fields.
pub fn line(out: &mut String, fields: &[&str]) {
    for (i, value) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, value);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_and_separators_quoted() {
        let mut out = String::new();
        line(&mut out, &["=1+1", "a,b", "say \"hi\"", "-2", "plain"]);
        assert_eq!(out, "'=1+1,\"a,b\",\"say \"\"hi\"\"\",'-2,plain\n");
    }
}
