//! PDF, Word, PowerPoint and Excel files through the whole pipeline (fixtures built by code),
//! their failures (password, scan, damage), and the legacy formats refused at upload.

mod common;

use std::io::{Cursor, Write};

use common::{TestServer, assert_envelope};
use kiln_extract::fixtures::{PdfPage, pdf, zip_package as package};
use serde_json::{Value, json};

fn docx(paragraphs: &[(&str, &str)]) -> Vec<u8> {
    let body: String = paragraphs
        .iter()
        .map(|(style, text)| {
            let style = if style.is_empty() {
                String::new()
            } else {
                format!(r#"<w:pPr><w:pStyle w:val="{style}"/></w:pPr>"#)
            };
            format!("<w:p>{style}<w:r><w:t>{text}</w:t></w:r></w:p>")
        })
        .collect();
    package(&[
        ("[Content_Types].xml", "<Types/>".into()),
        (
            "word/document.xml",
            format!(
                r#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
            ),
        ),
    ])
}

fn pptx(slides: &[&str]) -> Vec<u8> {
    let mut parts = vec![("ppt/presentation.xml", "<p:presentation/>".to_string())];
    let names: Vec<String> = (1..=slides.len())
        .map(|i| format!("ppt/slides/slide{i}.xml"))
        .collect();
    for (name, text) in names.iter().zip(slides) {
        parts.push((
            name.as_str(),
            format!(
                r#"<p:sld xmlns:a="a" xmlns:p="p"><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r><a:t>{text}</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#
            ),
        ));
    }
    package(&parts)
}

async fn upload_bytes(t: &TestServer, store: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let (status, body) = t.upload(store, name, bytes, None).await;
    (status.as_u16(), body)
}

/// The first search result for `query`, and the whole response for messages.
async fn top_result(t: &TestServer, store: &str, query: &str, mode: &str) -> (Value, Value) {
    let (_, found) = t
        .search(
            store,
            json!({"query": query, "mode": mode, "max_results": 3}),
        )
        .await;
    (found["results"][0].clone(), found)
}

/// The data of the file's `step_completed` log entry for extraction.
async fn extraction_data(t: &TestServer, store: &str, id: &str) -> Value {
    let logs = t.logs(store, id).await;
    logs.into_iter()
        .find(|e| e["event"] == "step_completed" && e["step"] == "extracting")
        .map(|e| e["data"].clone())
        .expect("an extraction entry")
}

/// Waits for the file to fail with `code` and a message that says `phrase`.
async fn assert_fails(t: &TestServer, store: &str, id: &str, code: &str, phrase: &str) {
    let failed = t.settle(store, id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_code"], code, "{failed}");
    let message = failed["error_message"].as_str().unwrap();
    assert!(message.contains(phrase), "{failed}");
}

#[tokio::test]
async fn word_powerpoint_and_excel_files_become_searchable() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let word = docx(&[
        ("Title", "Glaze chemistry"),
        (
            "",
            "Celadon glazes turn green from small amounts of iron oxide fired in reduction.",
        ),
        ("Heading1", "Cones"),
        (
            "",
            "Pyrometric cones bend at known temperatures and show the heat work of a firing.",
        ),
    ]);
    let (status, file) = upload_bytes(&t, &store, "glazes.docx", word).await;
    assert_eq!(status, 201, "{file}");
    assert_eq!(
        file["mime_type"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    let word_id = file["id"].as_str().unwrap().to_string();
    let deck = pptx(&[
        "Kiln safety: wear eye protection near spy holes.",
        "Loading shelves: leave two centimetres between pots for airflow.",
    ]);
    let (status, file) = upload_bytes(&t, &store, "safety.pptx", deck).await;
    assert_eq!(status, 201, "{file}");
    let deck_id = file["id"].as_str().unwrap().to_string();

    // A workbook: inline strings and numbers, one sheet.
    let sheet = |cells: &[&str], row: usize| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(c, v)| {
                let at = format!("{}{row}", (b'A' + c as u8) as char);
                if v.parse::<f64>().is_ok() {
                    format!(r#"<c r="{at}"><v>{v}</v></c>"#)
                } else {
                    format!(r#"<c r="{at}" t="inlineStr"><is><t>{v}</t></is></c>"#)
                }
            })
            .collect()
    };
    let main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    let rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let rels = "http://schemas.openxmlformats.org/package/2006/relationships";
    let workbook = package(&[
        ("[Content_Types].xml", "<Types/>".into()),
        (
            "_rels/.rels",
            format!(
                r#"<Relationships xmlns="{rels}"><Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
            ),
        ),
        (
            "xl/workbook.xml",
            format!(
                r#"<workbook xmlns="{main}" xmlns:r="{rel}"><sheets><sheet name="Firings" sheetId="1" r:id="rId1"/></sheets></workbook>"#
            ),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            format!(
                r#"<Relationships xmlns="{rels}"><Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#
            ),
        ),
        (
            "xl/worksheets/sheet1.xml",
            format!(
                r#"<worksheet xmlns="{main}"><sheetData><row r="1">{}</row><row r="2">{}</row><row r="3">{}</row></sheetData></worksheet>"#,
                sheet(&["Kiln", "Peak temperature", "Atmosphere"], 1),
                sheet(
                    &[
                        "Anagama wood kiln",
                        "1320",
                        "heavy reduction with ash deposits"
                    ],
                    2
                ),
                // A cell of emoji alone.
                sheet(&["Raku", "🔥🏺"], 3),
            ),
        ),
    ]);
    let (status, file) = upload_bytes(&t, &store, "firings.xlsx", workbook).await;
    assert_eq!(status, 201, "{file}");
    let book_id = file["id"].as_str().unwrap().to_string();

    for id in [&word_id, &deck_id, &book_id] {
        let done = t.settle(&store, id).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let extracted = extraction_data(&t, &store, &word_id).await;
    assert_eq!(extracted["format"], "docx", "{extracted}");

    let (top, found) = top_result(&t, &store, "iron oxide celadon reduction", "keyword").await;
    assert_eq!(top["file_id"], word_id.as_str(), "{found}");
    // A cell holding only emoji is found by its emoji.
    let (top, found) = top_result(&t, &store, "🔥", "keyword").await;
    assert_eq!(top["file_id"], book_id.as_str(), "{found}");
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    let (top, found) = top_result(&t, &store, "space between pots on shelves", "hybrid").await;
    assert_eq!(top["file_id"], deck_id.as_str(), "{found}");
    assert_eq!(
        top["page"], 2,
        "the slide number travels with the chunk: {found}"
    );
}

#[tokio::test]
async fn pdf_pages_are_searchable_and_bad_pdfs_fail_with_reasons() {
    let t = TestServer::start().await;
    let store = t.store().await;
    let report = pdf(
        &[
            PdfPage::Text(&[
                "Firing log of the spring season.",
                "Bisque firings ran to cone 04.",
            ]),
            PdfPage::Graphics,
            PdfPage::Text(&[
                "The anagama kiln reached cone 12 after five days of stoking with pine.",
            ]),
        ],
        None,
    );
    let (status, file) = upload_bytes(&t, &store, "report.pdf", report).await;
    assert_eq!(status, 201, "{file}");
    assert_eq!(file["mime_type"], "application/pdf");
    let report_id = file["id"].as_str().unwrap().to_string();
    // Only an owner password (copying forbidden): opens without one.
    let restricted = pdf(
        &[PdfPage::Text(&[
            "Restricted copy: salt glazing vapour coats the pots.",
        ])],
        Some(("", "owner secret")),
    );
    let (_, file) = upload_bytes(&t, &store, "restricted.pdf", restricted).await;
    let restricted_id = file["id"].as_str().unwrap().to_string();
    let locked = pdf(
        &[PdfPage::Text(&["Locked minutes."])],
        Some(("user secret", "owner secret")),
    );
    let (_, file) = upload_bytes(&t, &store, "locked.pdf", locked).await;
    let locked_id = file["id"].as_str().unwrap().to_string();
    let (_, file) = upload_bytes(&t, &store, "scan.pdf", pdf(&[PdfPage::Graphics], None)).await;
    let scan_id = file["id"].as_str().unwrap().to_string();
    let whole = pdf(&[PdfPage::Text(&["Cut short."])], None);
    let (_, file) = upload_bytes(&t, &store, "cut.pdf", whole[..whole.len() / 2].to_vec()).await;
    let cut_id = file["id"].as_str().unwrap().to_string();

    for id in [&report_id, &restricted_id] {
        let done = t.settle(&store, id).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let extracted = extraction_data(&t, &store, &report_id).await;
    assert_eq!(extracted["format"], "pdf", "{extracted}");
    assert_eq!(extracted["pages"], 3, "{extracted}");

    let (top, found) = top_result(
        &t,
        &store,
        "how many days of stoking did the anagama need",
        "hybrid",
    )
    .await;
    assert_eq!(top["file_id"], report_id.as_str(), "{found}");
    assert_eq!(
        top["page"], 3,
        "the page number travels with the chunk: {found}"
    );
    let (top, found) = top_result(&t, &store, "salt glazing vapour", "keyword").await;
    assert_eq!(top["file_id"], restricted_id.as_str(), "{found}");
    assert_eq!(top["page"], 1, "{found}");

    assert_fails(
        &t,
        &store,
        &locked_id,
        "ENCRYPTED_FILE",
        "Remove the password",
    )
    .await;
    assert_fails(&t, &store, &scan_id, "NO_TEXT_EXTRACTED", "OCR").await;
    assert_fails(&t, &store, &cut_id, "CORRUPT_FILE", "incomplete").await;
}

#[tokio::test]
async fn protected_and_damaged_office_files_fail_with_reasons() {
    let t = TestServer::start().await;
    let store = t.store().await;
    // A password-protected .docx is a compound file holding an EncryptedPackage stream.
    let mut protected = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1".to_vec();
    protected.extend(vec![0u8; 1024]);
    protected.extend("EncryptedPackage".encode_utf16().flat_map(u16::to_le_bytes));
    protected.extend(vec![0u8; 1024]);
    let (status, file) = upload_bytes(&t, &store, "secret.docx", protected).await;
    assert_eq!(status, 201, "{file}");
    let id = file["id"].as_str().unwrap();
    assert_fails(&t, &store, id, "ENCRYPTED_FILE", "Remove the password").await;

    let whole = docx(&[("", "Some words that will be cut off.")]);
    let (status, file) =
        upload_bytes(&t, &store, "cut.docx", whole[..whole.len() - 40].to_vec()).await;
    assert_eq!(status, 201, "{file}");
    let failed = t.settle(&store, file["id"].as_str().unwrap()).await;
    assert_eq!(failed["error_code"], "CORRUPT_FILE", "{failed}");
}

#[tokio::test]
async fn legacy_and_other_containers_are_refused_at_upload() {
    let t = TestServer::start().await;
    let store = t.store().await;
    // OpenDocument and EPUB start with an uncompressed `mimetype` entry.
    let mimetype_first = |mime: &str| {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        writer.start_file("mimetype", stored).unwrap();
        writer.write_all(mime.as_bytes()).unwrap();
        writer.finish().unwrap().into_inner()
    };
    let odt = mimetype_first("application/vnd.oasis.opendocument.text");
    let epub = mimetype_first("application/epub+zip");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "old.doc",
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1legacy".to_vec(),
        ),
        (
            "old.ppt",
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1legacy".to_vec(),
        ),
        ("text.odt", odt.clone()),
        ("renamed.docx", odt),
        ("book.epub", epub),
        ("letter.rtf", b"{\\rtf1\\ansi Hello}".to_vec()),
    ];
    for (name, bytes) in cases {
        let (status, body) = t.upload(&store, name, bytes, None).await;
        let error = assert_envelope(status, &body, 415, "UNSUPPORTED_FILE_TYPE");
        let supported = error["details"]["supported_types"].as_array().unwrap();
        assert!(supported.contains(&json!("docx")), "{name}: {body}");
    }
}

#[test]
fn a_large_pdf_is_shared_by_child_processes_and_comes_back_whole_in_page_order() {
    let library =
        kiln_extract::pdfium::ensure(&kiln_embed::fetch::shared_models_dir()).expect("engine");
    kiln_extract::read_pdfs_in_children(kiln_extract::ChildCommand::kiln(
        env!("CARGO_BIN_EXE_kiln").into(),
        &library,
        std::time::Duration::from_secs(120),
    ));
    // Over 1 MiB, so that on two cores two children each take every other page.
    let filler = "Stoneware is fired hot enough for the clay body to vitrify, glaze and all.";
    let lines: Vec<Vec<String>> = (1..=360)
        .map(|page| {
            let mut lines = vec![format!("Kiln manual page marker p{page}q.")];
            lines.extend((0..40).map(|_| filler.to_string()));
            lines
        })
        .collect();
    let pages: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.iter().map(String::as_str).collect())
        .collect();
    let pages: Vec<PdfPage> = pages.iter().map(|l| PdfPage::Text(l)).collect();
    let bytes = pdf(&pages, None);
    assert!(bytes.len() > 1 << 20, "{} bytes", bytes.len());
    let document = kiln_extract::extract(kiln_extract::Format::Pdf, &bytes).unwrap();
    assert_eq!(document.pages, Some(360));
    let numbers: Vec<Option<u32>> = document.sections.iter().map(|s| s.page).collect();
    assert_eq!(numbers, (1..=360).map(Some).collect::<Vec<_>>());
    for section in &document.sections {
        let marker = format!("marker p{}q.", section.page.unwrap());
        assert!(
            section.text.contains(&marker),
            "{marker}: {:?}",
            section.text
        );
    }
    assert!(
        kiln_extract::take_largest_child_rss_kib() > 0,
        "read in children"
    );
}
