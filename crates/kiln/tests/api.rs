//! HTTP-level tests of the foundation: the real server on a loopback port, a temporary data
//! dir, real requests.

mod common;

use common::{TestServer, assert_envelope};
use kiln_core::types::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------- authentication and roles (§2) ----------

#[tokio::test]
async fn credentials_are_required_and_checked() {
    let t = TestServer::start().await;
    let path = t.org_path("/knowledge/slices");

    let (s, b, _) = t.call(Method::GET, &path, None, None).await;
    assert_envelope(s, &b, 401, "AUTHENTICATION_REQUIRED");

    let (s, b, _) = t.call(Method::GET, &path, Some("garbage"), None).await;
    assert_envelope(s, &b, 401, "INVALID_API_KEY");

    let well_formed_unknown = format!("ak_{}", "A".repeat(40));
    let (s, b, _) = t
        .call(Method::GET, &path, Some(&well_formed_unknown), None)
        .await;
    assert_envelope(s, &b, 401, "INVALID_API_KEY");

    let response = t
        .client
        .get(t.url(&path))
        .header("Authorization", format!("Basic {}", t.key))
        .send()
        .await
        .unwrap();
    let s = response.status();
    let b: Value = response.json().await.unwrap();
    assert_envelope(s, &b, 401, "INVALID_API_KEY");

    // X-API-Key works as well as Bearer.
    let response = t
        .client
        .get(t.url(&path))
        .header("X-API-Key", &t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn organizations_are_the_keys_own() {
    let t = TestServer::start().await;
    let (s, b) = t.get("/v1/organizations").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["total"], 1);
    assert_eq!(b["organizations"].as_array().unwrap().len(), 1);
    let org = &b["organizations"][0];
    assert_eq!(org["name"], "default");
    for field in ["id", "name", "created_at", "updated_at"] {
        assert!(org[field].is_string(), "{field} in {org}");
    }

    let (s, b) = t.get(&t.org_path("")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["id"], t.org.as_str());

    let (other_org, _) = t.new_org_with_key(Role::Admin).await;
    let (s, b) = t.get(&format!("/v1/organizations/{other_org}")).await;
    assert_envelope(s, &b, 403, "ORGANIZATION_ACCESS_DENIED");

    let (s, b) = t.get("/v1/organizations/not-an-org").await;
    assert_envelope(s, &b, 404, "ORGANIZATION_NOT_FOUND");
    let (s, b) = t.get("/v1/organizations/vs_abcdefghij0123456789").await;
    assert_envelope(s, &b, 404, "ORGANIZATION_NOT_FOUND");
}

#[tokio::test]
async fn roles_limit_what_a_key_may_do() {
    let t = TestServer::start().await;
    let slice = t.create_slice("s").await;
    let reader = t.key_with_role(Role::Reader).await;
    let editor = t.key_with_role(Role::Editor).await;
    let path = t.org_path("/knowledge/slices");

    for key in [&reader, &editor] {
        let (s, b, _) = t
            .call(Method::POST, &path, Some(key), Some(json!({"name": "x"})))
            .await;
        let error = assert_envelope(s, &b, 403, "INSUFFICIENT_PERMISSIONS");
        assert_eq!(error["details"]["required_role"], "admin");
        // The role is checked before the body is read: a bad body still gets 403.
        let (s, b, _) = t
            .call(Method::POST, &path, Some(key), Some(json!({"name": 5})))
            .await;
        assert_envelope(s, &b, 403, "INSUFFICIENT_PERMISSIONS");
    }
    // Readers read.
    let (s, b, _) = t.call(Method::GET, &path, Some(&reader), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let slice_path = t.org_path(&format!(
        "/knowledge/slices/{}",
        slice["id"].as_str().unwrap()
    ));
    let (s, b, _) = t
        .call(
            Method::PATCH,
            &slice_path,
            Some(&reader),
            Some(json!({"name": "y"})),
        )
        .await;
    assert_envelope(s, &b, 403, "INSUFFICIENT_PERMISSIONS");
    let (s, b, _) = t
        .call(
            Method::POST,
            &format!("{slice_path}/archive"),
            Some(&editor),
            None,
        )
        .await;
    assert_envelope(s, &b, 403, "INSUFFICIENT_PERMISSIONS");
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let t = TestServer::start().await;
    let catalog = t.catalog().await;
    let created =
        kiln::admin::key_create(&catalog, &t.org.as_str().into(), Role::Reader, Some("temp"))
            .await
            .unwrap();
    let key = created["key"].as_str().unwrap();
    let path = t.org_path("/knowledge/stores");
    let (s, _, _) = t.call(Method::GET, &path, Some(key), None).await;
    assert_eq!(s, StatusCode::OK);

    let revoked = kiln::admin::key_revoke(&catalog, created["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(revoked["revoked_at"].is_string());
    let (s, b, _) = t.call(Method::GET, &path, Some(key), None).await;
    assert_envelope(s, &b, 401, "INVALID_API_KEY");
}

#[tokio::test]
async fn organizations_are_isolated() {
    let t = TestServer::start().await;
    let slice_a = t.create_slice("a-slice").await;
    let slice_a_id = slice_a["id"].as_str().unwrap();
    let store_a = t.create_store(slice_a_id, "a-store").await;
    let store_a_id = store_a["id"].as_str().unwrap();
    let (org_b, key_b) = t.new_org_with_key(Role::Admin).await;

    // B, in its own organization's paths, cannot see A's resources: 404.
    let b_path = |rest: &str| format!("/v1/organizations/{org_b}{rest}");
    let (s, b, _) = t
        .call(
            Method::GET,
            &b_path(&format!("/knowledge/slices/{slice_a_id}")),
            Some(&key_b),
            None,
        )
        .await;
    assert_envelope(s, &b, 404, "SLICE_NOT_FOUND");
    let (s, b, _) = t
        .call(
            Method::GET,
            &b_path(&format!("/knowledge/stores/{store_a_id}")),
            Some(&key_b),
            None,
        )
        .await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");
    let (s, b, _) = t
        .call(
            Method::DELETE,
            &b_path(&format!("/knowledge/stores/{store_a_id}")),
            Some(&key_b),
            None,
        )
        .await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");
    let (s, b, _) = t
        .call(
            Method::POST,
            &b_path(&format!("/knowledge/slices/{slice_a_id}/stores")),
            Some(&key_b),
            Some(json!({"name": "sneaky"})),
        )
        .await;
    assert_envelope(s, &b, 404, "SLICE_NOT_FOUND");
    let (s, b, _) = t
        .call(
            Method::GET,
            &b_path("/knowledge/slices"),
            Some(&key_b),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["total"], 0);
    let (s, b, _) = t
        .call(
            Method::GET,
            &b_path("/knowledge/stores"),
            Some(&key_b),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["total"], 0);

    // B in A's paths: 403.
    let (s, b, _) = t
        .call(
            Method::GET,
            &t.org_path("/knowledge/slices"),
            Some(&key_b),
            None,
        )
        .await;
    assert_envelope(s, &b, 403, "ORGANIZATION_ACCESS_DENIED");

    // A still sees its own.
    let (s, b) = t
        .get(&t.org_path(&format!("/knowledge/stores/{store_a_id}")))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

// ---------- the envelope (§3) ----------

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_envelopes() {
    let t = TestServer::start().await;
    let (s, b, h) = t.call(Method::GET, "/nope", None, None).await;
    let error = assert_envelope(s, &b, 404, "RESOURCE_NOT_FOUND");
    assert_eq!(h["x-request-id"].to_str().unwrap(), error["trace_id"]);

    let (s, b, _) = t.call(Method::DELETE, "/health", None, None).await;
    assert_envelope(s, &b, 405, "METHOD_NOT_ALLOWED");
    let (s, b, _) = t
        .call(
            Method::PUT,
            &t.org_path("/knowledge/slices"),
            Some(&t.key),
            None,
        )
        .await;
    assert_envelope(s, &b, 405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let t = TestServer::start().await;
    let response = t
        .client
        .get(t.url("/v1/organizations"))
        .header("x-request-id", "my-trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "my-trace-123");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["trace_id"], "my-trace-123");

    let ok = t.client.get(t.url("/health")).send().await.unwrap();
    let generated = ok.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(generated.len() >= 16);
    let again = t.client.get(t.url("/health")).send().await.unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), generated);
}

#[tokio::test]
async fn malformed_bodies_are_400_and_wrong_shapes_422() {
    let t = TestServer::start().await;
    let url = t.url(&t.org_path("/knowledge/slices"));
    let send = |body: &'static str, content_type: Option<&'static str>| {
        let mut request = t.client.post(&url).bearer_auth(&t.key).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = send("{\"name\": ", Some("application/json")).await;
    assert_envelope(s, &b, 400, "INVALID_REQUEST");
    let (s, b) = send("{\"name\": \"x\"}", Some("text/plain")).await;
    assert_envelope(s, &b, 400, "INVALID_REQUEST");
    let (s, b) = send("{\"name\": \"x\"}", None).await;
    assert_envelope(s, &b, 400, "INVALID_REQUEST");

    for (body, field) in [
        ("{\"name\": 12}", "name"),
        ("[\"name\"]", "body"),
        ("{}", "name"),
        ("{\"name\": \"ok\", \"type\": \"galaxy\"}", "type"),
        ("{\"name\": \"ok\", \"owner_type\": 3}", "owner_type"),
    ] {
        let (s, b) = send(body, Some("application/json")).await;
        let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
        assert_eq!(error["details"]["fields"][0]["field"], field, "{body}: {b}");
        assert!(error["details"]["fields"][0]["message"].is_string());
    }
}

#[tokio::test]
async fn names_must_have_1_to_255_characters() {
    let t = TestServer::start().await;
    let path = t.org_path("/knowledge/slices");
    for bad in [String::new(), "   ".to_string(), "x".repeat(256)] {
        let (s, b) = t.post(&path, json!({ "name": bad })).await;
        let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
        assert_eq!(error["details"]["fields"][0]["field"], "name");
    }
    let (s, b) = t.post(&path, json!({ "name": "é".repeat(255) })).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let slice = t.create_slice("stores-here").await;
    let stores = t.org_path(&format!(
        "/knowledge/slices/{}/stores",
        slice["id"].as_str().unwrap()
    ));
    let (s, b) = t.post(&stores, json!({ "name": "x".repeat(256) })).await;
    assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    let (s, b) = t
        .post(&stores, json!({ "name": "ok", "access_mode": "everyone" }))
        .await;
    let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    assert_eq!(error["details"]["fields"][0]["field"], "access_mode");
}

/// A body announced as 1 GiB is refused with 413 before any of it is read.
#[tokio::test]
async fn a_huge_json_body_is_refused_before_it_is_read() {
    let t = TestServer::start().await;
    let mut stream = tokio::net::TcpStream::connect(t.server.addr).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{{\"name\": \"",
        t.org_path("/knowledge/slices"),
        t.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n")
                && String::from_utf8_lossy(&response).contains("PAYLOAD_TOO_LARGE")
            {
                break;
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server answered without waiting for the body"
    );
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"code\":\"PAYLOAD_TOO_LARGE\""), "{text}");
}

/// A chunked body (no Content-Length) over the limit is cut off at the limit with 413.
#[tokio::test]
async fn a_streamed_json_body_over_the_limit_is_413() {
    let t = TestServer::start().await;
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let stream = futures_stream(big.into_bytes());
    let response = t
        .client
        .post(t.url(&t.org_path("/knowledge/slices")))
        .bearer_auth(&t.key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_envelope(status, &body, 413, "PAYLOAD_TOO_LARGE");
}

fn futures_stream(bytes: Vec<u8>) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    futures::stream::iter(chunks)
}

#[tokio::test]
async fn a_panicking_handler_becomes_a_500_envelope_without_internals() {
    let extra = axum::Router::new().route(
        "/v1/test/panic",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("secret internal detail /etc/kiln SELECT * FROM api_keys");
            }
            "unreachable"
        }),
    );
    let t = TestServer::start_with(extra).await;
    let (s, b, h) = t.call(Method::GET, "/v1/test/panic", None, None).await;
    let error = assert_envelope(s, &b, 500, "INTERNAL_ERROR");
    assert_eq!(h["x-request-id"].to_str().unwrap(), error["trace_id"]);
    let text = b.to_string();
    assert!(
        !text.contains("secret") && !text.contains("SELECT"),
        "{text}"
    );
    // The server keeps serving.
    let (s, _, _) = t.call(Method::GET, "/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
}

// ---------- slices and stores (§4) ----------

#[tokio::test]
async fn slices_lifecycle() {
    let t = TestServer::start().await;
    let (s, slice) = t
        .post(
            &t.org_path("/knowledge/slices"),
            json!({"name": "Handbooks", "description": "HR", "type": "personal",
                   "owner_type": "user", "owner_id": "u1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{slice}");
    let id = slice["id"].as_str().unwrap();
    assert!(id.starts_with("kslice_") && id.len() == 27, "{id}");
    assert_eq!(slice["name"], "Handbooks");
    assert_eq!(slice["description"], "HR");
    assert_eq!(slice["type"], "personal");
    assert_eq!(slice["owner_type"], "user");
    assert_eq!(slice["owner_id"], "u1");
    assert_eq!(slice["status"], "active");
    assert_eq!(slice["is_composite"], false);
    assert_eq!(slice["member_slice_ids"], json!([]));
    assert_eq!(slice["store_count"], 0);
    assert_eq!(slice["organization_id"], t.org.as_str());
    assert!(slice["created_by"].as_str().unwrap().starts_with("ak_"));
    assert!(slice["archived_at"].is_null() && slice["archived_by"].is_null());

    // Defaults.
    let plain = t.create_slice("Plain").await;
    assert_eq!(plain["type"], "standard");
    assert_eq!(plain["owner_type"], "organization");
    assert!(plain["description"].is_null());

    let path = t.org_path(&format!("/knowledge/slices/{id}"));
    let (s, got) = t.get(&path).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, slice);

    let (s, patched, _) = t
        .call(
            Method::PATCH,
            &path,
            Some(&t.key),
            Some(json!({"name": "Manuals", "description": null})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "Manuals");
    assert!(patched["description"].is_null());
    assert_eq!(patched["type"], "personal");

    // A store makes store_count 1.
    t.create_store(id, "st").await;
    let (_, got) = t.get(&path).await;
    assert_eq!(got["store_count"], 1);

    // Filter by type.
    let (s, list) = t.get(&t.org_path("/knowledge/slices?type=personal")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id);

    // Archive: hidden from the default list, shown with status=archived, read-only.
    let (s, archived) = t.post(&format!("{path}/archive"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{archived}");
    assert_eq!(archived["status"], "archived");
    assert!(archived["archived_at"].is_string());
    assert!(archived["archived_by"].as_str().unwrap().starts_with("ak_"));
    let (s, again) = t.post(&format!("{path}/archive"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["archived_at"], archived["archived_at"]);

    let (_, active) = t.get(&t.org_path("/knowledge/slices")).await;
    assert_eq!(active["total"], 1);
    assert_eq!(active["items"][0]["id"], plain["id"]);
    let (_, archived_list) = t
        .get(&t.org_path("/knowledge/slices?status=archived"))
        .await;
    assert_eq!(archived_list["total"], 1);
    assert_eq!(archived_list["items"][0]["id"], id);

    let (s, b, _) = t
        .call(
            Method::PATCH,
            &path,
            Some(&t.key),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_envelope(s, &b, 409, "SLICE_ARCHIVED");
    let (s, b) = t
        .post(&format!("{path}/stores"), json!({"name": "late"}))
        .await;
    assert_envelope(s, &b, 409, "SLICE_ARCHIVED");

    let (s, b) = t.get(&t.org_path("/knowledge/slices?status=deleted")).await;
    let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    assert_eq!(error["details"]["fields"][0]["field"], "status");
}

#[tokio::test]
async fn unknown_and_misprefixed_ids_are_404_of_that_resource() {
    let t = TestServer::start().await;
    let slice = t.create_slice("s").await;
    let slice_id = slice["id"].as_str().unwrap();
    let store = t.create_store(slice_id, "st").await;
    let store_id = store["id"].as_str().unwrap();

    for bad in ["kslice_00000000000000000000", "nope", store_id] {
        let (s, b) = t
            .get(&t.org_path(&format!("/knowledge/slices/{bad}")))
            .await;
        let error = assert_envelope(s, &b, 404, "SLICE_NOT_FOUND");
        assert_eq!(error["details"]["slice_id"], bad);
    }
    for bad in ["vs_00000000000000000000", "nope", slice_id] {
        let (s, b) = t
            .get(&t.org_path(&format!("/knowledge/stores/{bad}")))
            .await;
        let error = assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");
        assert_eq!(error["details"]["store_id"], bad);
    }
    let (s, b) = t
        .get(&t.org_path("/knowledge/slices/kslice_00000000000000000000/stores"))
        .await;
    assert_envelope(s, &b, 404, "SLICE_NOT_FOUND");
    let (s, b) = t
        .post(
            &t.org_path("/knowledge/slices/kslice_00000000000000000000/archive"),
            json!({}),
        )
        .await;
    assert_envelope(s, &b, 404, "SLICE_NOT_FOUND");
    let (s, b, _) = t
        .call(
            Method::PATCH,
            &t.org_path(&format!("/knowledge/stores/{store_id}")),
            Some(&t.key),
            Some(json!({"slice_id": "kslice_00000000000000000000"})),
        )
        .await;
    assert_envelope(s, &b, 404, "SLICE_NOT_FOUND");
}

#[tokio::test]
async fn stores_lifecycle() {
    let t = TestServer::start().await;
    let slice = t.create_slice("s").await;
    let slice_id = slice["id"].as_str().unwrap();
    let other_slice = t.create_slice("s2").await;
    let (s, store) = t
        .post(
            &t.org_path(&format!("/knowledge/slices/{slice_id}/stores")),
            json!({"name": "Docs", "description": "d", "access_mode": "private"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{store}");
    let id = store["id"].as_str().unwrap();
    assert!(id.starts_with("vs_") && id.len() == 23);
    assert_eq!(store["slice_id"], slice_id);
    assert_eq!(store["organization_id"], t.org.as_str());
    assert_eq!(store["access_mode"], "private");
    assert_eq!(store["is_active"], true);
    assert_eq!(store["file_count"], 0);
    assert_eq!(store["data_size"], 0);
    assert_eq!(
        store["file_counts"],
        json!({"pending": 0, "processing": 0, "completed": 0, "failed": 0, "total": 0})
    );
    assert_eq!(
        store["chunking"],
        json!({"max_chunk_tokens": 800, "chunk_overlap_tokens": 400})
    );
    let default_mode = t.create_store(slice_id, "Default").await;
    assert_eq!(default_mode["access_mode"], "organization");

    let path = t.org_path(&format!("/knowledge/stores/{id}"));
    let (s, got) = t.get(&path).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, store);

    let (s, moved, _) = t
        .call(
            Method::PATCH,
            &path,
            Some(&t.key),
            Some(json!({"name": "Docs 2", "access_mode": "public",
                        "slice_id": other_slice["id"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{moved}");
    assert_eq!(moved["name"], "Docs 2");
    assert_eq!(moved["access_mode"], "public");
    assert_eq!(moved["description"], "d");
    assert_eq!(moved["slice_id"], other_slice["id"]);

    let (_, in_slice) = t
        .get(&t.org_path(&format!("/knowledge/slices/{slice_id}/stores")))
        .await;
    assert_eq!(in_slice["total"], 1);
    assert_eq!(in_slice["items"][0]["name"], "Default");
    let (_, all) = t.get(&t.org_path("/knowledge/stores")).await;
    assert_eq!(all["total"], 2);
    // Newest first.
    assert_eq!(all["items"][0]["name"], "Default");

    let (s, b, _) = t.call(Method::DELETE, &path, Some(&t.key), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = t.get(&path).await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");
    let (_, all) = t.get(&t.org_path("/knowledge/stores")).await;
    assert_eq!(all["total"], 1);
}

#[tokio::test]
async fn pagination_edges() {
    let t = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(t.create_slice(&format!("slice {i}")).await["id"].clone());
    }
    ids.reverse(); // newest first
    let list = |q: &'static str| t.get_owned(t.org_path(&format!("/knowledge/slices{q}")));

    let (s, page) = list("?limit=2").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        (
            page["total"].clone(),
            page["skip"].clone(),
            page["limit"].clone()
        ),
        (json!(5), json!(0), json!(2))
    );
    assert_eq!(page["has_more"], true);
    assert_eq!(page["items"][0]["id"], ids[0]);
    assert_eq!(page["items"][1]["id"], ids[1]);

    let (_, page) = list("?skip=4&limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], ids[4]);
    assert_eq!(page["has_more"], false);

    let (_, page) = list("?skip=3&limit=2").await;
    assert_eq!(page["has_more"], false);
    let (_, page) = list("?skip=2&limit=2").await;
    assert_eq!(page["has_more"], true);

    let (_, page) = list("?skip=50").await;
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["total"], 5);
    assert_eq!(page["has_more"], false);

    let (_, page) = list("").await;
    assert_eq!(page["limit"], 20);
    assert_eq!(page["skip"], 0);
    let (s, _) = list("?limit=100").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = list("?limit=1").await;
    assert_eq!(s, StatusCode::OK);

    for (q, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?skip=-1", "skip"),
        ("?limit=abc", "limit"),
        ("?skip=1.5", "skip"),
    ] {
        let (s, b) = list(q).await;
        let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
        assert_eq!(error["details"]["fields"][0]["field"], field, "{q}");
    }
    for q in ["?limit=0", "?skip=-1"] {
        let (s, b) = t.get(&t.org_path(&format!("/knowledge/stores{q}"))).await;
        assert_envelope(s, &b, 422, "VALIDATION_ERROR");
    }
}

// ---------- operations (§12) ----------

#[tokio::test]
async fn operations_endpoints() {
    let t = TestServer::start().await;
    let (s, b, _) = t.call(Method::GET, "/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["status"], "ok");
    let (s, b, _) = t.call(Method::GET, "/ready", None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut expected = json!({"catalog": true, "storage": true, "model": true});
    if common::cluster() {
        // An API node of a cluster also says how far its index replica is behind the log,
        // and how it opened (a new node of a new cluster: built from the empty catalog).
        expected["index"] = json!({
            "applied": 0, "behind": 0, "error": null,
            "opened": {"from": "rebuilt", "reason": "no replica here yet", "chunks": 0, "seq": 0},
        });
    }
    assert_eq!(b["checks"], expected);

    t.get(&t.org_path("/knowledge/slices")).await;
    t.get(&t.org_path("/knowledge/slices?limit=0")).await;
    let metrics = t
        .client
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "kiln_http_requests_total{method=\"GET\",route=\"/v1/organizations/{organization_id}/knowledge/slices\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("status=\"422\""), "{metrics}");
    assert!(
        metrics.contains("kiln_http_request_duration_seconds_bucket{"),
        "{metrics}"
    );
    // A cluster API node says where its index replica stands (nothing logged yet here).
    assert!(metrics.contains("kiln_index_replica_behind 0"), "{metrics}");
    assert!(
        metrics.contains("kiln_index_replica_applied 0"),
        "{metrics}"
    );

    let (s, openapi, _) = t.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = openapi["paths"].as_object().unwrap();
    for p in [
        "/v1/organizations",
        "/v1/organizations/{organization_id}",
        "/v1/organizations/{organization_id}/knowledge/slices",
        "/v1/organizations/{organization_id}/knowledge/slices/{slice_id}/archive",
        "/v1/organizations/{organization_id}/knowledge/stores/{store_id}",
        "/health",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(openapi["components"]["schemas"]["ErrorEnvelope"].is_object());
    assert!(openapi["components"]["schemas"]["Store"]["properties"]["file_counts"].is_object());
    // Every reference resolves (typed IDs such as `StoreId` are components of their own),
    // and an ID is a string on the wire.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&openapi, &mut all);
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("a schema reference");
        assert!(
            openapi["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
    let store_id = &openapi["components"]["schemas"]["Store"]["properties"]["id"];
    let store_id = match store_id["$ref"].as_str() {
        Some(r) => &openapi["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => store_id,
    };
    assert_eq!(store_id["type"], "string", "{store_id}");

    let docs = t.client.get(t.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("swagger")
    );
}

#[tokio::test]
async fn metrics_can_require_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(dir.path());
    config.http.metrics_require_key = true;
    let options = kiln::server::Options {
        model: Some(common::model().await),
        ..Default::default()
    };
    let server = kiln::server::Server::start_with(config, options)
        .await
        .unwrap();
    let key = server.initial_key.clone().unwrap().value;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", server.base_url());
    let denied = client.get(&url).send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let allowed = client.get(&url).bearer_auth(key).send().await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    server.shutdown().await.unwrap();
}

// ---------- durability ----------

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_everything() {
    let t = TestServer::start().await;
    let slice = t.create_slice("kept").await;
    let store = t
        .create_store(slice["id"].as_str().unwrap(), "kept-store")
        .await;
    let reader = t.key_with_role(Role::Reader).await;
    let (_, before) = t.get(&t.org_path("/knowledge/stores")).await;

    let config = common::config_for(t.dir.path());
    let t = t.restart_with(common::model().await, config).await;

    let (s, after) = t.get(&t.org_path("/knowledge/stores")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(after, before);
    let (s, got) = t
        .get(&t.org_path(&format!(
            "/knowledge/stores/{}",
            store["id"].as_str().unwrap()
        )))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, store);
    let (s, _, _) = t
        .call(
            Method::GET,
            &t.org_path("/knowledge/slices"),
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

trait GetOwned {
    fn get_owned(&self, path: String) -> impl std::future::Future<Output = (StatusCode, Value)>;
}

impl GetOwned for TestServer {
    async fn get_owned(&self, path: String) -> (StatusCode, Value) {
        self.get(&path).await
    }
}
