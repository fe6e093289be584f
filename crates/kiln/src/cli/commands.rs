//! `kiln stores`, `kiln files`, `kiln search`, `kiln usage`: one API call or a few, shown as
//! a table for people or JSON for scripts.

use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

use super::output::{bytes, file_key, json as print_json, table, text};
use super::{Exit, SOME_FAILED, USAGE, connect};
use crate::client::ApiClient;

/// A store named by ID (`vs_…`) or by name.
pub(super) async fn store_id(api: &ApiClient, store: &str) -> anyhow::Result<String> {
    if store.starts_with("vs_") {
        api.call(api.org_request(Method::GET, &format!("/knowledge/stores/{store}")))
            .await?;
        return Ok(store.to_string());
    }
    api.find_store(store).await?.ok_or_else(|| {
        Exit::new(
            1,
            format!("no store named '{store}' (see `kiln stores ls`)"),
        )
        .into()
    })
}

/// A file named by ID, or by its path in the store (`dir/name.pdf`).
async fn file_id(api: &ApiClient, store: &str, file: &str) -> anyhow::Result<String> {
    if file.starts_with("file_") || file.starts_with("vsf_") {
        return Ok(file.to_string());
    }
    let name = file.rsplit('/').next().unwrap_or(file);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("search", name)
        .append_pair("limit", "100")
        .finish();
    let page = api
        .call(api.org_request(Method::GET, &format!("/stores/{store}/files?{query}")))
        .await?;
    let found: Vec<&Value> = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| file_key(f) == file)
        .collect();
    match found.as_slice() {
        [one] => Ok(text(&one["id"])),
        [] => Err(Exit::new(1, format!("no file '{file}' in the store")).into()),
        _ => Err(Exit::new(USAGE, format!("several files are '{file}': name one by ID")).into()),
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum StoresCommand {
    /// List stores with their file counts and size.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Create a store (in the organization's default slice); prints its ID.
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a store and everything in it.
    Rm { store: String },
}

pub async fn stores(command: StoresCommand, profile: Option<&str>) -> anyhow::Result<()> {
    let api = connect(profile).await?;
    match command {
        StoresCommand::Ls { json } => {
            let all = api.all_pages("/knowledge/stores").await?;
            if json {
                print_json(&Value::Array(all));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    let c = &s["file_counts"];
                    vec![
                        text(&s["id"]),
                        text(&s["name"]),
                        text(&c["total"]),
                        text(&c["completed"]),
                        format!(
                            "{}",
                            c["pending"].as_i64().unwrap_or(0)
                                + c["processing"].as_i64().unwrap_or(0)
                        ),
                        text(&c["failed"]),
                        bytes(s["data_size"].as_u64().unwrap_or(0)),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "NAME",
                    "FILES",
                    "COMPLETED",
                    "IN PROGRESS",
                    "FAILED",
                    "SIZE",
                ],
                &rows,
            );
        }
        StoresCommand::Create { name, json } => {
            let answer = api
                .call(
                    api.org_request(Method::POST, "/vector-stores")
                        .json(&json!({ "name": name })),
                )
                .await?;
            let store = &answer["data"];
            if json {
                print_json(store);
            } else {
                println!("{}", text(&store["id"]));
            }
        }
        StoresCommand::Rm { store } => {
            let id = store_id(&api, &store).await?;
            api.call(api.org_request(Method::DELETE, &format!("/knowledge/stores/{id}")))
                .await?;
            eprintln!("deleted store {id}");
        }
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
pub enum FilesCommand {
    /// List a store's files, newest first.
    Ls {
        #[arg(long)]
        store: String,
        /// pending, processing, completed or failed.
        #[arg(long)]
        status: Option<String>,
        /// A part of the name or path.
        #[arg(long)]
        search: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A file's status (by ID or path in the store).
    Status {
        #[arg(long)]
        store: String,
        file: String,
        #[arg(long)]
        json: bool,
    },
    /// A file's processing log, oldest first.
    Logs {
        #[arg(long)]
        store: String,
        file: String,
        #[arg(long)]
        json: bool,
    },
    /// Retry failed files (by ID or path), or every failed file of the store.
    Retry {
        #[arg(long)]
        store: String,
        #[arg(required_unless_present = "all_failed")]
        files: Vec<String>,
        #[arg(long, conflicts_with = "files")]
        all_failed: bool,
    },
    /// Delete files (by ID or path).
    Rm {
        #[arg(long)]
        store: String,
        #[arg(required = true)]
        files: Vec<String>,
    },
}

pub async fn files(command: FilesCommand, profile: Option<&str>) -> anyhow::Result<()> {
    let api = connect(profile).await?;
    match command {
        FilesCommand::Ls {
            store,
            status,
            search,
            json,
        } => {
            let store = store_id(&api, &store).await?;
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(status) = &status {
                query.append_pair("status", status);
            }
            if let Some(search) = &search {
                query.append_pair("search", search);
            }
            let all = api
                .all_pages(&format!("/stores/{store}/files?{}", query.finish()))
                .await?;
            if json {
                print_json(&Value::Array(all));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|f| {
                    vec![
                        text(&f["id"]),
                        file_key(f),
                        text(&f["status"]),
                        text(&f["current_step"]),
                        format!("{}%", text(&f["progress_percent"])),
                        text(&f["error_code"]),
                    ]
                })
                .collect();
            table(
                &["ID", "PATH", "STATUS", "STEP", "PROGRESS", "ERROR"],
                &rows,
            );
        }
        FilesCommand::Status { store, file, json } => {
            let store = store_id(&api, &store).await?;
            let id = file_id(&api, &store, &file).await?;
            let status = api
                .call(api.org_request(Method::GET, &format!("/stores/{store}/files/{id}/status")))
                .await?;
            if json {
                print_json(&status);
            } else if let Some(fields) = status.as_object() {
                for (key, value) in fields {
                    println!("{key:<18} {}", text(value));
                }
            }
        }
        FilesCommand::Logs { store, file, json } => {
            let store = store_id(&api, &store).await?;
            let id = file_id(&api, &store, &file).await?;
            let logs = api
                .call(api.org_request(
                    Method::GET,
                    &format!("/stores/{store}/files/{id}/logs?limit=100"),
                ))
                .await?;
            let items = logs["items"].as_array().cloned().unwrap_or_default();
            if json {
                print_json(&Value::Array(items));
                return Ok(());
            }
            for e in &items {
                println!(
                    "{}  attempt {}  {:<8} {:<11} {:<20} {}",
                    text(&e["timestamp"]),
                    text(&e["attempt"]),
                    text(&e["level"]),
                    text(&e["step"]),
                    text(&e["event"]),
                    text(&e["message"])
                );
            }
        }
        FilesCommand::Retry {
            store,
            files,
            all_failed,
        } => {
            let store = store_id(&api, &store).await?;
            let mut ids = Vec::new();
            if all_failed {
                for f in api.files(&store).await? {
                    if f["status"] == "failed" {
                        ids.push(text(&f["id"]));
                    }
                }
            } else {
                for file in &files {
                    ids.push(file_id(&api, &store, file).await?);
                }
            }
            let mut refused = 0;
            for id in &ids {
                let answer = api
                    .call(
                        api.org_request(Method::POST, &format!("/stores/{store}/files/{id}/retry"))
                            .json(&json!({})),
                    )
                    .await;
                match answer {
                    Ok(_) => eprintln!("queued {id}"),
                    Err(err) => {
                        refused += 1;
                        eprintln!("not retried {id}: {err:#}");
                    }
                }
            }
            eprintln!("{} of {} queued again", ids.len() - refused, ids.len());
            if refused > 0 {
                return Err(
                    Exit::new(SOME_FAILED, format!("{refused} could not be retried")).into(),
                );
            }
        }
        FilesCommand::Rm { store, files } => {
            let store = store_id(&api, &store).await?;
            for file in &files {
                let id = file_id(&api, &store, file).await?;
                api.call(api.org_request(Method::DELETE, &format!("/stores/{store}/files/{id}")))
                    .await?;
                eprintln!("deleted {file}");
            }
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    query: String,
    /// Store name or ID; repeat for several.
    #[arg(long, required = true)]
    store: Vec<String>,
    /// hybrid, semantic or keyword.
    #[arg(long, default_value = "hybrid")]
    mode: String,
    #[arg(long, default_value_t = 10)]
    top_k: u32,
    #[arg(long)]
    json: bool,
}

pub async fn search(args: SearchArgs, profile: Option<&str>) -> anyhow::Result<()> {
    let api = connect(profile).await?;
    let mut ids = Vec::new();
    for store in &args.store {
        ids.push(store_id(&api, store).await?);
    }
    let body = json!({"query": args.query, "mode": args.mode, "top_k": args.top_k});
    let answer = if let [one] = ids.as_slice() {
        api.call(
            api.org_request(Method::POST, &format!("/stores/{one}/search"))
                .json(&body),
        )
        .await?
    } else {
        let mut body = body;
        body["store_ids"] = json!(ids);
        api.call(
            api.org_request(Method::POST, "/knowledge/search")
                .json(&body),
        )
        .await?
    };
    if args.json {
        print_json(&answer);
        return Ok(());
    }
    let results = answer["results"].as_array().context("results")?;
    for (rank, r) in results.iter().enumerate() {
        let path = file_key(r);
        let page = r["page"]
            .as_i64()
            .map(|p| format!(", page {p}"))
            .unwrap_or_default();
        println!(
            "{:>2}. {:.4}  {path} (chunk {}{page})",
            rank + 1,
            r["score"].as_f64().unwrap_or(0.0),
            text(&r["chunk_index"])
        );
        let excerpt: String = text(&r["text"])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let excerpt: String = excerpt.chars().take(240).collect();
        println!("    {excerpt}");
    }
    eprintln!(
        "{} results, {} mode, {} ms",
        results.len(),
        text(&answer["mode"]),
        text(&answer["took_ms"])
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// One store's figures instead of the organization's.
    #[arg(long)]
    store: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn usage(args: UsageArgs, profile: Option<&str>) -> anyhow::Result<()> {
    let api = connect(profile).await?;
    let answer = match &args.store {
        Some(store) => {
            let id = store_id(&api, store).await?;
            api.call(api.org_request(Method::GET, &format!("/stores/{id}/usage")))
                .await?
        }
        None => {
            api.call(api.org_request(Method::GET, "/knowledge/usage"))
                .await?
        }
    };
    if args.json {
        print_json(&answer);
        return Ok(());
    }
    let row = |name: String, u: &Value| {
        vec![
            name,
            text(&u["file_count"]),
            text(&u["chunk_count"]),
            bytes(u["original_bytes"].as_u64().unwrap_or(0)),
            bytes(u["extracted_text_bytes"].as_u64().unwrap_or(0)),
            bytes(u["vector_bytes"].as_u64().unwrap_or(0)),
            bytes(u["index_bytes"].as_u64().unwrap_or(0)),
            bytes(u["total_bytes"].as_u64().unwrap_or(0)),
        ]
    };
    let mut rows = Vec::new();
    for s in answer["stores"].as_array().into_iter().flatten() {
        rows.push(row(text(&s["name"]), s));
    }
    rows.push(row(
        if args.store.is_some() {
            text(&answer["store_id"])
        } else {
            "(all)".into()
        },
        &answer,
    ));
    table(
        &[
            "STORE",
            "FILES",
            "CHUNKS",
            "ORIGINALS",
            "TEXT",
            "VECTORS",
            "INDEX",
            "TOTAL",
        ],
        &rows,
    );
    Ok(())
}
