//! Test fixtures written by code, for this crate's tests and the server's (feature
//! `fixtures`): ZIP packages (the container of Office files), and small PDFs with text pages,
//! pages without text, and the standard security handler (RC4, 40-bit) with a user and an
//! owner password; legacy Excel workbooks (BIFF8 in a compound file).

use std::io::{Cursor, Write};

use md5::{Digest, Md5};

/// Loads the PDF engine from the folder shared by test runs on this machine
/// ([`kiln_fetch::shared_dir`]), fetching it the first time.
pub fn pdf_engine() {
    crate::pdfium::ensure(&kiln_fetch::shared_dir()).expect("the PDF engine can be fetched");
}

/// A ZIP package of `parts` (name, content), deflated.
pub fn zip_package<S: AsRef<str>>(parts: &[(&str, S)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in parts {
        writer.start_file(*name, options).unwrap();
        writer.write_all(content.as_ref().as_bytes()).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// What a page shows: text lines, a content stream of its own (font `/F1` is Helvetica), or
/// only a filled rectangle (a scan has no text layer).
pub enum PdfPage<'a> {
    Text(&'a [&'a str]),
    Content(&'a str),
    Graphics,
}

const PAD: [u8; 32] = [
    0x28, 0xBF, 0x4E, 0x5E, 0x4E, 0x75, 0x8A, 0x41, 0x64, 0x00, 0x4E, 0x56, 0xFF, 0xFA, 0x01, 0x08,
    0x2E, 0x2E, 0x00, 0xB6, 0xD0, 0x68, 0x3E, 0x80, 0x2F, 0x0C, 0xA9, 0xFE, 0x64, 0x53, 0x69, 0x7A,
];
const FILE_ID: [u8; 16] = *b"kiln-test-fileid";

fn rc4(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut s: Vec<u8> = (0..=255).collect();
    let mut j = 0u8;
    for i in 0..256 {
        j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
        s.swap(i, j as usize);
    }
    let (mut i, mut j) = (0u8, 0u8);
    data.iter()
        .map(|&b| {
            i = i.wrapping_add(1);
            j = j.wrapping_add(s[i as usize]);
            s.swap(i as usize, j as usize);
            b ^ s[s[i as usize].wrapping_add(s[j as usize]) as usize]
        })
        .collect()
}

fn padded(password: &str) -> Vec<u8> {
    password.bytes().chain(PAD).take(32).collect()
}

/// `/O`, `/U` and the file key of revision 2 (ISO 32000-1, algorithms 2–4).
fn security(user: &str, owner: &str, permissions: i32) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let owner_key = &Md5::digest(padded(owner))[..5];
    let o = rc4(owner_key, &padded(user));
    let mut hash = Md5::new();
    hash.update(padded(user));
    hash.update(&o);
    hash.update(permissions.to_le_bytes());
    hash.update(FILE_ID);
    let key = hash.finalize()[..5].to_vec();
    let u = rc4(&key, &PAD);
    (o, u, key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A PDF of `pages`; with `passwords` (user, owner) encrypted with permissions restricted.
pub fn pdf(pages: &[PdfPage], passwords: Option<(&str, &str)>) -> Vec<u8> {
    let permissions: i32 = -44; // no modifying, no copying
    let security = passwords.map(|(user, owner)| security(user, owner, permissions));
    let mut objects: Vec<Vec<u8>> = Vec::new();
    let page_ids: Vec<usize> = (0..pages.len()).map(|i| 4 + 2 * i).collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    let kids: Vec<String> = page_ids.iter().map(|id| format!("{id} 0 R")).collect();
    objects.push(
        format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            pages.len()
        )
        .into_bytes(),
    );
    objects.push(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec());
    for (i, page) in pages.iter().enumerate() {
        let content_id = page_ids[i] + 1;
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>"
            )
            .into_bytes(),
        );
        let mut stream = String::new();
        match page {
            PdfPage::Text(lines) => {
                stream.push_str("BT /F1 12 Tf 72 720 Td 16 TL\n");
                for line in *lines {
                    let escaped = line
                        .replace('\\', "\\\\")
                        .replace('(', "\\(")
                        .replace(')', "\\)");
                    stream.push_str(&format!("({escaped}) Tj T*\n"));
                }
                stream.push_str("ET");
            }
            PdfPage::Content(content) => stream.push_str(content),
            PdfPage::Graphics => stream.push_str("0.5 g 72 72 400 600 re f"),
        }
        let mut data = stream.into_bytes();
        if let Some((_, _, key)) = &security {
            let mut object_key = key.clone();
            object_key.extend_from_slice(&(content_id as u32).to_le_bytes()[..3]);
            object_key.extend_from_slice(&[0, 0]);
            data = rc4(&Md5::digest(&object_key)[..10], &data);
        }
        let mut object = format!("<< /Length {} >>\nstream\n", data.len()).into_bytes();
        object.extend_from_slice(&data);
        object.extend_from_slice(b"\nendstream");
        objects.push(object);
    }
    let mut trailer = format!("/Size {} /Root 1 0 R", objects.len() + 1);
    if let Some((o, u, _)) = &security {
        objects.push(
            format!(
                "<< /Filter /Standard /V 1 /R 2 /O <{}> /U <{}> /P {permissions} >>",
                hex(o),
                hex(u)
            )
            .into_bytes(),
        );
        trailer = format!(
            "/Size {} /Root 1 0 R /Encrypt {} 0 R /ID [<{id}> <{id}>]",
            objects.len() + 1,
            objects.len(),
            id = hex(&FILE_ID)
        );
    }
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(object);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< {trailer} >>\nstartxref\n{xref}\n%%EOF\n").as_bytes(),
    );
    out
}

/// A BIFF8 record: type, length, data.
pub fn biff(typ: u16, data: &[u8]) -> Vec<u8> {
    let mut record = typ.to_le_bytes().to_vec();
    record.extend((data.len() as u16).to_le_bytes());
    record.extend(data);
    record
}

/// A BOF record (BIFF8) for a substream of type `dt` (0x0005 globals, 0x0010 worksheet).
pub fn biff_bof(dt: u16) -> Vec<u8> {
    let mut data = 0x0600u16.to_le_bytes().to_vec();
    data.extend(dt.to_le_bytes());
    data.extend([0u8; 12]);
    biff(0x0809, &data)
}

/// A NUMBER record (BIFF8): `value` at (`row`, `col`), general format.
pub fn biff_number(row: u16, col: u16, value: f64) -> Vec<u8> {
    let mut data = row.to_le_bytes().to_vec();
    data.extend(col.to_le_bytes());
    data.extend(0u16.to_le_bytes());
    data.extend(value.to_le_bytes());
    biff(0x0203, &data)
}

/// An Excel 97-2003 workbook (BIFF8 in a compound file) with one sheet named `sheet` holding
/// numbers at `(row, column, value)`.
pub fn xls_of(sheet: &str, numbers: &[(u16, u16, f64)]) -> Vec<u8> {
    use std::io::Write;
    let sheet_record = |position: u32| {
        let mut data = position.to_le_bytes().to_vec();
        data.extend([0u8, 0u8, sheet.len() as u8, 0u8]);
        data.extend(sheet.as_bytes());
        biff(0x0085, &data)
    };
    let globals_len = biff_bof(0x0005).len() + sheet_record(0).len() + biff(0x000A, &[]).len();
    let mut stream = biff_bof(0x0005);
    stream.extend(sheet_record(globals_len as u32));
    stream.extend(biff(0x000A, &[]));
    stream.extend(biff_bof(0x0010));
    for &(row, col, value) in numbers {
        stream.extend(biff_number(row, col, value));
    }
    stream.extend(biff(0x000A, &[]));
    let mut file = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new()))
        .expect("a compound file in memory");
    file.create_stream("/Workbook")
        .and_then(|mut s| s.write_all(&stream))
        .expect("the workbook stream");
    file.flush().expect("flushed");
    file.into_inner().into_inner()
}
