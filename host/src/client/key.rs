//! `keyward key …`: create, import, describe, ls, rm, encrypt, decrypt, dek, hmac.

use std::io::IsTerminal;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Serialize;
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
        KeyCommand::Encrypt { client, name, plaintext, context } => encrypt(&client, &name, plaintext, context),
        KeyCommand::Decrypt { client, name, ciphertext, context_b64, context } => {
            decrypt(&client, &name, ciphertext, Context::pick(context_b64, context)?)
        }
        KeyCommand::Dek { client, name, context_b64, context } => {
            dek(&client, &name, Context::pick(context_b64, context)?)
        }
        KeyCommand::Hmac { client, name, message } => hmac(&client, &name, message),
    }
}

/// Whether a result goes out as JSON: when asked, or when standard output
/// is not a terminal, as `kes key encrypt` and `kes key dek` do, so that
/// `keyward key encrypt k msg | jq .ciphertext` works as it did with `kes`.
fn json_when_piped(client: &ClientArgs) -> bool {
    client.json || !std::io::stdout().is_terminal()
}

/// `kes key encrypt`'s JSON, field for field.
#[derive(Serialize)]
struct EncryptOutput<'a> {
    ciphertext: &'a str,
}

/// `kes key dek`'s JSON, field for field and in its order.
#[derive(Serialize)]
struct DekOutput<'a> {
    plaintext: &'a str,
    ciphertext: &'a str,
}

/// Associated data, already base64 for the request body.
struct Context(Option<String>);

impl Context {
    /// The context from the positional argument (base64, as the `kes` CLI
    /// takes it, so its scripts decrypt what they encrypted) or from
    /// `--context` (text); clap refuses both at once.
    fn pick(b64: Option<String>, text: Option<String>) -> Result<Context, ClientError> {
        if let Some(b64) = b64 {
            let bytes = B64.decode(b64.trim().as_bytes()).map_err(|_| {
                ClientError::Usage(
                    "the context is not valid base64 (a CONTEXT argument is base64, as with kes; use --context TEXT for text)"
                        .into(),
                )
            })?;
            return Ok(Context(Some(B64.encode(bytes))));
        }
        Ok(Context(text.map(|t| B64.encode(t.as_bytes()))))
    }

    fn add_to(self, body: &mut Value) {
        if let Some(c) = self.0 {
            body["context"] = Value::String(c);
        }
    }
}

fn encrypt(
    client: &ClientArgs,
    name: &str,
    plaintext: Option<String>,
    context: Option<String>,
) -> Result<(), ClientError> {
    let plaintext = arg_or_stdin(plaintext)?;
    let mut body = json!({ "plaintext": B64.encode(&plaintext) });
    Context::pick(None, context)?.add_to(&mut body);
    let json_out = json_when_piped(client);
    with_api(client, |api| async move {
        let v: Value = api.put_json(&format!("/v1/key/encrypt/{}", segment(name)), &body).await?;
        let ciphertext = required(&v, "ciphertext")?;
        if json_out {
            output::json_line(&EncryptOutput { ciphertext })
        } else {
            output::line(ciphertext)
        }
    })
}

fn decrypt(client: &ClientArgs, name: &str, ciphertext: Option<String>, context: Context) -> Result<(), ClientError> {
    let text = String::from_utf8_lossy(&arg_or_stdin(ciphertext)?).into_owned();
    let ct = decode_b64("ciphertext", &text)?;
    let mut body = json!({ "ciphertext": B64.encode(&ct) });
    context.add_to(&mut body);
    let json_out = client.json;
    with_api(client, |api| async move {
        let v: Value = api.put_json(&format!("/v1/key/decrypt/{}", segment(name)), &body).await?;
        let pt = required(&v, "plaintext")?;
        if json_out {
            return output::json(&json!({ "plaintext": pt }));
        }
        let mut plain = decode_b64("plaintext from the server", pt).map_err(|e| ClientError::Failed(e.to_string()))?;
        // Plaintext goes out exactly as encrypted; a terminal gets a
        // final newline so the prompt does not end up on the same line.
        if std::io::stdout().is_terminal() && !plain.ends_with(b"\n") {
            plain.push(b'\n');
        }
        output::raw(&plain)
    })
}

fn dek(client: &ClientArgs, name: &str, context: Context) -> Result<(), ClientError> {
    let mut body = json!({});
    context.add_to(&mut body);
    let json_out = json_when_piped(client);
    with_api(client, |api| async move {
        let v: Value = api.put_json(&format!("/v1/key/generate/{}", segment(name)), &body).await?;
        let (plaintext, ciphertext) = (required(&v, "plaintext")?, required(&v, "ciphertext")?);
        if json_out {
            output::json_line(&DekOutput { plaintext, ciphertext })
        } else {
            output::fields(&[("plaintext", plaintext.to_string()), ("ciphertext", ciphertext.to_string())])
        }
    })
}

fn hmac(client: &ClientArgs, name: &str, message: Option<String>) -> Result<(), ClientError> {
    let message = arg_or_stdin(message)?;
    let body = json!({ "message": B64.encode(&message) });
    let json_out = client.json;
    with_api(client, |api| async move {
        let v: Value = api.put_json(&format!("/v1/key/hmac/{}", segment(name)), &body).await?;
        let mac = required(&v, "hmac")?;
        if json_out {
            return output::json(&json!({ "hmac": mac }));
        }
        let bytes = decode_b64("HMAC from the server", mac).map_err(|e| ClientError::Failed(e.to_string()))?;
        output::line(&hex::encode(bytes))
    })
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

/// A string field the server must have sent.
fn required<'a>(v: &'a Value, field: &str) -> Result<&'a str, ClientError> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Failed(format!("unexpected answer from the server: no '{field}'")))
}
