//! Search across stores (contract §11, `POST …/knowledge/search`) against the real server and
//! the real model: which stores a search covers, that another organization's stores stay
//! invisible even inside a list, filters, and `score_threshold`.

mod common;

use common::{TestServer, assert_envelope};
use kiln_core::types::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const VITAMIN: &str = "Vitamin D deficiency is associated with an increased risk of hip \
    fractures in older adults. Supplementation with calcium and vitamin D reduced the \
    fracture rate in a randomised trial of nursing-home residents.";
const YEAST: &str = "Budding yeast cells regulate gene expression through chromatin \
    remodelling complexes. Mutations in the SWI/SNF complex change transcription of \
    hundreds of genes during the cell cycle.";
const SOLAR: &str = "Perovskite solar cells convert sunlight into electricity with an \
    efficiency that has risen quickly, but their stability under heat and humidity remains \
    the main obstacle to commercial photovoltaic modules.";

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The file IDs of a search's results, in order.
fn files_of(b: &Value) -> Vec<String> {
    b["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{b}"))
        .iter()
        .map(|r| r["file_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn knowledge_search_covers_the_named_stores_or_a_slice_and_nothing_else() {
    let t = TestServer::start().await;
    // Slice A holds two stores, slice B one.
    let slice_a = id(&t.create_slice("papers").await);
    let medicine = id(&t.create_store(&slice_a, "medicine").await);
    let biology = id(&t.create_store(&slice_a, "biology").await);
    let slice_b = id(&t.create_slice("energy").await);
    let energy = id(&t.create_store(&slice_b, "energy").await);
    let vitamin = t.upload_ok(&medicine, "vitamin.txt", VITAMIN).await;
    let yeast = t.upload_ok(&biology, "yeast.txt", YEAST).await;
    let solar = t.upload_ok(&energy, "solar.txt", SOLAR).await;
    for (store, file) in [(&medicine, &vitamin), (&biology, &yeast), (&energy, &solar)] {
        assert_eq!(t.settle(store, file).await["status"], "completed");
    }
    let search = t.org_path("/knowledge/search");

    // Each document ranks first for its own topic in every mode, over a list of stores and
    // over a slice, and the result names its store and file.
    for mode in ["hybrid", "semantic", "keyword"] {
        for scope in [
            json!({"store_ids": [medicine, biology, energy]}),
            json!({"slice_id": slice_a}),
        ] {
            let mut body = scope.clone();
            body["mode"] = json!(mode);
            body["query"] = json!("chromatin remodelling and gene transcription in yeast");
            let (s, b) = t.post(&search, body).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let first = &b["results"][0];
            assert_eq!(first["file_id"], yeast.as_str(), "{mode} {scope}: {b}");
            assert_eq!(first["store_id"], biology.as_str());
            assert_eq!(first["store_name"], "biology");
            assert_eq!(first["file_name"], "yeast.txt");
            assert_eq!(b["mode"], mode);
        }
    }
    // A slice covers only its own stores.
    let (_, b) = t
        .post(
            &search,
            json!({"slice_id": slice_b, "query": "vitamin D and hip fractures"}),
        )
        .await;
    assert_eq!(files_of(&b), vec![solar.clone()], "{b}");
    let (_, b) = t
        .post(
            &search,
            json!({"slice_id": slice_a, "query": "solar cells", "top_k": 100}),
        )
        .await;
    let found = files_of(&b);
    assert!(!found.contains(&solar) && found.contains(&vitamin), "{b}");
    // A list covers only the listed stores; duplicates count once.
    let (_, b) = t
        .post(
            &search,
            json!({"store_ids": [medicine, medicine], "query": "yeast", "mode": "semantic"}),
        )
        .await;
    assert_eq!(files_of(&b), vec![vitamin.clone()], "{b}");

    // Filters and score_threshold apply across stores.
    let (_, b) = t
        .post(
            &search,
            json!({"slice_id": slice_a, "query": "cells", "filters": {"file_ids": [yeast]}}),
        )
        .await;
    assert_eq!(files_of(&b), vec![yeast.clone()], "{b}");
    let (_, b) = t
        .post(
            &search,
            json!({"store_ids": [medicine, biology, energy], "query": "vitamin D supplementation and fractures",
                   "mode": "semantic", "score_threshold": 0.4}),
        )
        .await;
    let results = b["results"].as_array().unwrap();
    assert_eq!(files_of(&b), vec![vitamin.clone()], "{b}");
    assert!(results.iter().all(|r| r["score"].as_f64().unwrap() >= 0.4));

    // Another organization's store is 404 even beside the organization's own, and its slice
    // too; a reader of the other organization does not see ours either.
    let (other_org, other_key) = t.new_org_with_key(Role::Admin).await;
    let (s, other_slice, _) = t
        .call(
            Method::POST,
            &format!("/v1/organizations/{other_org}/knowledge/slices"),
            Some(&other_key),
            Some(json!({"name": "theirs"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other_slice}");
    let (s, other_store, _) = t
        .call(
            Method::POST,
            &format!(
                "/v1/organizations/{other_org}/knowledge/slices/{}/stores",
                id(&other_slice)
            ),
            Some(&other_key),
            Some(json!({"name": "theirs"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other_store}");
    let (s, b) = t
        .post(
            &search,
            json!({"store_ids": [medicine, id(&other_store)], "query": "vitamin"}),
        )
        .await;
    let error = assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");
    assert_eq!(error["details"]["store_id"], id(&other_store));
    let (s, b) = t
        .post(
            &search,
            json!({"slice_id": id(&other_slice), "query": "vitamin"}),
        )
        .await;
    let error = assert_envelope(s, &b, 404, "SLICE_NOT_FOUND");
    assert_eq!(error["details"]["slice_id"], id(&other_slice));
    let (s, b, _) = t
        .call(
            Method::POST,
            &format!("/v1/organizations/{other_org}/knowledge/search"),
            Some(&other_key),
            Some(json!({"store_ids": [medicine], "query": "vitamin"})),
        )
        .await;
    assert_envelope(s, &b, 404, "VECTOR_STORE_NOT_FOUND");

    // A reader may search; the scope must be given exactly one way.
    let reader = t.key_with_role(Role::Reader).await;
    let (s, b, _) = t
        .call(
            Method::POST,
            &search,
            Some(&reader),
            Some(json!({"slice_id": slice_a, "query": "vitamin"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for (body, field) in [
        (json!({"query": "vitamin"}), "slice_id"),
        (
            json!({"query": "vitamin", "slice_id": slice_a, "store_ids": [medicine]}),
            "store_ids",
        ),
        (json!({"query": "vitamin", "store_ids": []}), "store_ids"),
        (
            json!({"query": "vitamin", "store_ids": [medicine], "top_k": 0}),
            "top_k",
        ),
    ] {
        let (s, b) = t.post(&search, body.clone()).await;
        let error = assert_envelope(s, &b, 422, "VALIDATION_ERROR");
        let fields = error["details"]["fields"].to_string();
        assert!(fields.contains(field), "{body}: {b}");
    }
}
