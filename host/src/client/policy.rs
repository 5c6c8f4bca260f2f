//! `keyward policy ls|show`.

use serde_json::{json, Value};

use super::api::segment;
use super::key::{print_names, with_api};
use super::output::{self, str_of};
use super::ClientError;
use crate::cli::PolicyCommand;

pub fn run(cmd: PolicyCommand) -> Result<(), ClientError> {
    match cmd {
        PolicyCommand::Ls { client, prefix } => {
            let json_out = client.json;
            with_api(&client, |api| async move {
                let names = api.list("/v1/policy/list/", prefix.trim_end_matches('*'), "names").await?;
                print_names(&names, json_out)
            })
        }
        PolicyCommand::Show { client, name } => {
            let json_out = client.json;
            with_api(&client, |api| async move {
                let v: Value = api.get_json(&format!("/v1/policy/read/{}", segment(&name))).await?;
                let allow = patterns(v.get("allow"));
                let deny = patterns(v.get("deny"));
                if json_out {
                    return output::json(&json!({
                        "name": if str_of(&v, "name").is_empty() { name.as_str() } else { str_of(&v, "name") },
                        "allow": allow,
                        "deny": deny,
                        "created_at": str_of(&v, "created_at"),
                        "created_by": str_of(&v, "created_by"),
                    }));
                }
                output::fields(&[
                    ("Name", name.clone()),
                    ("Created", str_of(&v, "created_at").to_string()),
                    ("Created by", str_of(&v, "created_by").to_string()),
                ])?;
                print_rules("Allow", &allow)?;
                print_rules("Deny", &deny)
            })
        }
    }
}

/// Policy rules as a list. The new generation sends `{"<pattern>": {}}`
/// objects, the old one arrays; both become a sorted list.
pub(crate) fn patterns(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = match v {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    out.sort();
    out
}

pub(crate) fn print_rules(label: &str, rules: &[String]) -> Result<(), ClientError> {
    if rules.is_empty() {
        return Ok(());
    }
    output::line(&format!("{label}:"))?;
    for r in rules {
        output::line(&format!("  {r}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_generations_rule_shapes_are_read() {
        let new = json!({"/v1/key/create/*": {}, "/v1/status": {}});
        assert_eq!(patterns(Some(&new)), ["/v1/key/create/*", "/v1/status"]);
        let old = json!(["/v1/status", "/v1/key/create/*"]);
        assert_eq!(patterns(Some(&old)), ["/v1/key/create/*", "/v1/status"]);
        assert!(patterns(None).is_empty());
    }
}
