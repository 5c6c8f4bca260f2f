//! `keyward key …`: create, import, describe, ls, rm, encrypt, decrypt, dek, hmac.

use std::io::IsTerminal;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::api::{segment, Api};
use super::output::{self, str_of};
use super::{block_on, connect::connect, ClientError};
use crate::cli::{ClientArgs, KeyCommand};

pub fn run(cmd: KeyCommand) -> Result<(), ClientError> {
    match cmd {
        KeyCommand::Create { client, names } => with_api(&client, |api| async move {
            each(&names, |n| {
                let api = &api;
                async move { api.put(&format!("/v1/key/create/{}", segment(&n)), None).await }
            })
            .await
        }),
        KeyCommand::Import { client, name, material, cipher } => {
            let text = if material == "-" { output::read_stdin_string()? } else { material };
            let key = decode_b64("key", &text)?;
            let body = json!({ "key": B64.encode(&key[..]), "cipher": cipher });
            with_api(
                &client,
                |api| async move { api.put(&format!("/v1/key/import/{}", segment(&name)), Some(&body)).await },
            )
        }
        KeyCommand::Describe { client, name } => {
            let json_out = client.json;
            with_api(&client, |api| async move {
                let v: Value = api.get_json(&format!("/v1/key/describe/{}", segment(&name))).await?;
                if json_out {
                    return output::json(&v);
                }
                output::fields(&[
                    ("Name", str_of(&v, "name").to_string()),
                    ("Algorithm", str_of(&v, "algorithm").to_string()),
                    ("Created", str_of(&v, "created_at").to_string()),
                    ("Created by", str_of(&v, "created_by").to_string()),
                ])
            })
        }
        KeyCommand::Ls { client, prefix } => {
            let json_out = client.json;
            with_api(&client, |api| async move {
                let names = api.list("/v1/key/list/", prefix.trim_end_matches('*'), "names").await?;
                print_names(&names, json_out)
            })
        }
        KeyCommand::Rm { client, names } => with_api(&client, |api| async move {
            each(&names, |n| {
                let api = &api;
                async move { api.delete(&format!("/v1/key/delete/{}", segment(&n))).await }
            })
            .await
        }),
        KeyCommand::Encrypt { client, name, plaintext, context } => {
            let plaintext = arg_or_stdin(plaintext)?;
            let mut body = json!({ "plaintext": B64.encode(&plaintext) });
            add_context(&mut body, context);
            let json_out = client.json;
            with_api(&client, |api| async move {
                let v: Value = api.put_json(&format!("/v1/key/encrypt/{}", segment(&name)), &body).await?;
                let ct = required(&v, "ciphertext")?;
                if json_out {
                    output::json(&json!({ "ciphertext": ct }))
                } else {
                    output::line(ct)
                }
            })
        }
        KeyCommand::Decrypt { client, name, ciphertext, context } => {
            let text = String::from_utf8_lossy(&arg_or_stdin(ciphertext)?).into_owned();
            let ct = decode_b64("ciphertext", &text)?;
            let mut body = json!({ "ciphertext": B64.encode(&ct) });
            add_context(&mut body, context);
            let json_out = client.json;
            with_api(&client, |api| async move {
                let v: Value = api.put_json(&format!("/v1/key/decrypt/{}", segment(&name)), &body).await?;
                let pt = required(&v, "plaintext")?;
                if json_out {
                    return output::json(&json!({ "plaintext": pt }));
                }
                let mut plain =
                    decode_b64("plaintext from the server", pt).map_err(|e| ClientError::Failed(e.to_string()))?;
                // Plaintext goes out exactly as encrypted; a terminal gets a
                // final newline so the prompt does not end up on the same line.
                if std::io::stdout().is_terminal() && !plain.ends_with(b"\n") {
                    plain.push(b'\n');
                }
                output::raw(&plain)
            })
        }
        KeyCommand::Dek { client, name, context } => {
            let mut body = json!({});
            add_context(&mut body, context);
            let json_out = client.json;
            with_api(&client, |api| async move {
                let v: Value = api.put_json(&format!("/v1/key/generate/{}", segment(&name)), &body).await?;
                let (pt, ct) = (required(&v, "plaintext")?, required(&v, "ciphertext")?);
                if json_out {
                    output::json(&json!({ "plaintext": pt, "ciphertext": ct }))
                } else {
                    output::fields(&[("plaintext", pt.to_string()), ("ciphertext", ct.to_string())])
                }
            })
        }
        KeyCommand::Hmac { client, name, message } => {
            let message = arg_or_stdin(message)?;
            let body = json!({ "message": B64.encode(&message) });
            let json_out = client.json;
            with_api(&client, |api| async move {
                let v: Value = api.put_json(&format!("/v1/key/hmac/{}", segment(&name)), &body).await?;
                let mac = required(&v, "hmac")?;
                if json_out {
                    return output::json(&json!({ "hmac": mac }));
                }
                let bytes = decode_b64("HMAC from the server", mac).map_err(|e| ClientError::Failed(e.to_string()))?;
                output::line(&hex::encode(bytes))
            })
        }
    }
}

/// Connects and runs `f` on the client runtime.
pub(crate) fn with_api<F, Fut>(client: &ClientArgs, f: F) -> Result<(), ClientError>
where
    F: FnOnce(Api) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let api = connect(client)?;
    block_on(f(api))
}

/// Runs `op` for every name in order, stopping at the first failure. With
/// several names the failing one is named, since "key already exists" alone
/// would not say which.
async fn each<F, Fut>(names: &[String], op: F) -> Result<(), ClientError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    for n in names {
        match op(n.clone()).await {
            Ok(()) => {}
            Err(ClientError::Server { status, message }) if names.len() > 1 => {
                return Err(ClientError::Server { status, message: format!("{n}: {message}") })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Prints names one per line, or as a JSON array.
pub(crate) fn print_names(names: &[String], json_out: bool) -> Result<(), ClientError> {
    if json_out {
        return output::json(&json!(names));
    }
    for n in names {
        output::line(n)?;
    }
    Ok(())
}

/// The argument's bytes, or standard input when it is absent or `-`.
fn arg_or_stdin(arg: Option<String>) -> Result<Vec<u8>, ClientError> {
    match arg {
        Some(a) if a != "-" => Ok(a.into_bytes()),
        _ => output::read_stdin(),
    }
}

fn decode_b64(what: &str, text: &str) -> Result<Vec<u8>, ClientError> {
    B64.decode(text.trim().as_bytes()).map_err(|_| ClientError::Usage(format!("the {what} is not valid base64")))
}

fn add_context(body: &mut Value, context: Option<String>) {
    if let Some(c) = context {
        body["context"] = Value::String(B64.encode(c.as_bytes()));
    }
}

/// A string field the server must have sent.
fn required<'a>(v: &'a Value, field: &str) -> Result<&'a str, ClientError> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Failed(format!("unexpected answer from the server: no '{field}'")))
}
