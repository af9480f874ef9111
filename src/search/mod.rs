//! Full-text search over everything mlbox keeps: pipelines, runs, task logs, models, model
//! versions and datasets, in one tantivy index under `<data dir>/search/v1/`.
//!
//! One writer thread owns the `IndexWriter`. Callers send it what changed (`Item`: a run, a
//! finished attempt's log, a model...); it reads the current rows from the store (and the log
//! file), replaces those documents, and commits in batches: at most every `COMMIT_EVERY`, or
//! at once when a caller waits (`flush`). Queries run on the caller's thread against a reader
//! reloaded after each commit. A document's `id` is its key ("run:42"); `parent` keys let one
//! delete remove what belongs to a run or an attempt.

mod docs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, QueryParserError, TermQuery};
use tantivy::schema::{FAST, IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError, Term};

use crate::error::{Error, Result};
use crate::logs::LogKey;
use crate::store::Store;

pub use docs::Doc;

/// What one can search for, in the order results are grouped.
pub const KINDS: &[&str] = &["pipeline", "run", "log", "model", "version", "dataset"];

/// Longest query accepted.
const MAX_QUERY: usize = 1024;
/// Pending changes are committed at most this long after they arrive.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// Something that changed; the writer re-reads it from the store and replaces its documents.
#[derive(Debug, Clone)]
pub enum Item {
    Pipeline(String),
    /// The run's own document (state, params, errors).
    Run(i64),
    /// A finished attempt's log.
    Log(LogKey),
    /// The datasets a run wrote.
    RunDatasets(i64),
    /// A model and all its versions.
    Model(String),
    /// A run with everything it wrote: its document, every attempt's log, its datasets.
    RunAll(i64),
    /// A deleted run: its document, its logs.
    DeleteRun(i64),
}

impl Item {
    /// Items with the same key produce the same documents: queued twice, built once.
    fn key(&self) -> String {
        format!("{self:?}")
    }
}

enum Msg {
    Item(Item),
    /// Rebuild; the answer goes to the sender, if any.
    Reindex(Option<mpsc::Sender<Result<usize>>>),
    Flush(mpsc::Sender<()>),
}

#[derive(Clone, Copy)]
struct Fields {
    kind: tantivy::schema::Field,
    id: tantivy::schema::Field,
    parent: tantivy::schema::Field,
    title: tantivy::schema::Field,
    body: tantivy::schema::Field,
    ts: tantivy::schema::Field,
    url: tantivy::schema::Field,
    line: tantivy::schema::Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let f = Fields {
        kind: b.add_text_field("kind", STRING | STORED),
        id: b.add_text_field("id", STRING | STORED),
        parent: b.add_text_field("parent", STRING),
        title: b.add_text_field("title", TEXT | STORED),
        body: b.add_text_field("body", TEXT | STORED),
        ts: b.add_i64_field("ts", FAST | STORED),
        url: b.add_text_field("url", STORED),
        line: b.add_u64_field("line", STORED),
    };
    (b.build(), f)
}

/// Where the writer reads what it indexes.
#[derive(Clone)]
pub struct Sources {
    pub store: Store,
    pub logs_dir: PathBuf,
}

#[derive(Clone)]
pub struct Search {
    inner: Arc<Inner>,
}

struct Inner {
    reader: IndexReader,
    parser: QueryParser,
    f: Fields,
    tx: Mutex<mpsc::Sender<Msg>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// A rebuild is queued and has not started: more requests add nothing.
    rebuild_queued: Arc<std::sync::atomic::AtomicBool>,
}

/// A search request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Request {
    #[serde(default)]
    pub q: String,
    pub kind: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub kind: String,
    pub id: String,
    pub title: String,
    /// HTML: the best fragment of the text, escaped, with the query's terms in `<b>`.
    pub snippet: String,
    /// The UI page of this thing.
    pub url: String,
    pub ts: i64,
    /// Logs: the line of the log where the first highlighted word is (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub score: f32,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub query: String,
    pub total: usize,
    pub hits: Vec<Hit>,
}

impl Search {
    /// Open (or create) the index in `dir` and start its writer. A new or unreadable index is
    /// rebuilt from `src` in the background.
    pub fn open(dir: &Path, src: Sources) -> Result<Search> {
        let (schema, f) = schema();
        std::fs::create_dir_all(dir)?;
        let fresh = |dir: &Path| -> Result<Index> {
            std::fs::remove_dir_all(dir)?;
            std::fs::create_dir_all(dir)?;
            Index::create_in_dir(dir, schema.clone()).map_err(err)
        };
        // The index is derived data: whatever keeps it from opening, it is rebuilt from the store.
        let opened = MmapDirectory::open(dir)
            .map_err(|e| TantivyError::SystemError(e.to_string()))
            .and_then(|d| Index::open_or_create(d, schema.clone()))
            .and_then(|index| {
                let empty = index.searchable_segment_ids()?.is_empty();
                let reader: IndexReader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
                Ok((index, reader, empty))
            });
        let (index, reader, rebuild) = match opened {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "The search index cannot be opened; rebuilding it");
                let index = fresh(dir)?;
                let reader: IndexReader =
                    index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(err)?;
                (index, reader, true)
            }
        };
        let opts = IndexWriterOptions::builder()
            .memory_budget_per_thread(32_000_000)
            .num_worker_threads(1)
            .num_merge_threads(1)
            .build();
        let writer: IndexWriter = index.writer_with_options(opts).map_err(err)?;
        let mut parser = QueryParser::for_index(&index, vec![f.title, f.body]);
        parser.set_conjunction_by_default();
        parser.set_field_boost(f.title, 2.0);
        let (tx, rx) = mpsc::channel();
        let r = reader.clone();
        let rebuild_queued = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queued = rebuild_queued.clone();
        let thread = std::thread::Builder::new()
            .name("search-writer".into())
            .spawn(move || writer_loop(writer, r, f, src, rx, queued))
            .map_err(Error::internal)?;
        let inner = Inner { reader, parser, f, tx: Mutex::new(tx), thread: Mutex::new(Some(thread)), rebuild_queued };
        let search = Search { inner: Arc::new(inner) };
        if rebuild {
            search.request_reindex();
        }
        Ok(search)
    }

    fn send(&self, m: Msg) {
        if let Ok(tx) = self.inner.tx.lock() {
            let _ = tx.send(m);
        }
    }

    /// Queue a change; it is searchable after the next commit (within `COMMIT_EVERY`).
    pub fn update(&self, item: Item) {
        self.send(Msg::Item(item));
    }

    /// Commit everything queued so far and make it searchable; returns when done.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Flush(tx));
        let _ = rx.recv();
    }

    /// Rebuild the whole index from the store and the logs; returns how many documents it holds.
    pub fn reindex(&self) -> Result<usize> {
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Reindex(Some(tx)));
        rx.recv().map_err(|_| Error::internal("the search writer stopped"))?
    }

    /// Queue a rebuild without waiting for it; a rebuild already queued covers this request.
    pub fn request_reindex(&self) {
        if !self.inner.rebuild_queued.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.send(Msg::Reindex(None));
        }
    }

    /// Stop the writer after it has committed what is queued.
    pub fn stop(&self) {
        // Replacing the sender drops the writer's last connection to us: its loop ends.
        if let Ok(mut tx) = self.inner.tx.lock() {
            *tx = mpsc::channel().0;
        }
        if let Some(t) = self.inner.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }

    pub fn query(&self, req: &Request) -> Result<Results> {
        let q = req.q.trim();
        if q.is_empty() {
            return Err(Error::bad_request("give a query: q=words (e.g. q=timeout or q=\"out of memory\")"));
        }
        if q.len() > MAX_QUERY {
            return Err(Error::bad_request(format!("the query is {} bytes; the limit is {MAX_QUERY}", q.len())));
        }
        let limit = req.limit.unwrap_or(20).clamp(1, 100);
        let offset = req.offset.unwrap_or(0).min(10_000);
        let f = self.inner.f;
        let parsed =
            self.inner.parser.parse_query(q).map_err(|e| Error::bad_request(explain(&self.inner.parser, q, e)))?;
        let query: Box<dyn Query> = match req.kind.as_deref().filter(|k| !k.is_empty()) {
            None => parsed.box_clone(),
            Some(k) if KINDS.contains(&k) => {
                let kind = TermQuery::new(Term::from_field_text(f.kind, k), IndexRecordOption::Basic);
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, parsed.box_clone()),
                    (Occur::Must, Box::new(ConstScoreQuery::new(Box::new(kind), 0.0))),
                ]))
            }
            Some(k) => {
                return Err(Error::bad_request(format!("unknown kind '{k}'; use one of {}", KINDS.join(", "))));
            }
        };
        let searcher = self.inner.reader.searcher();
        let collector = (TopDocs::with_limit(limit).and_offset(offset).order_by_score(), Count);
        let (top, total) = searcher.search(&*query, &collector).map_err(err)?;
        let mut body_snips = SnippetGenerator::create(&searcher, &*parsed, f.body).map_err(err)?;
        body_snips.set_max_num_chars(200);
        let mut title_snips = SnippetGenerator::create(&searcher, &*parsed, f.title).map_err(err)?;
        title_snips.set_max_num_chars(200);
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr).map_err(err)?;
            let text = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or("").to_string();
            let body = text(f.body);
            let snip = body_snips.snippet(&body);
            let (snippet, line) = if snip.is_empty() {
                let head: String = body.chars().take(200).collect();
                (mlbox_ui::svg::esc(&head), doc.get_first(f.line).and_then(|v| v.as_u64()))
            } else {
                // The line of the first highlighted word.
                let at = snip.fragment_range().start + snip.highlighted().first().map_or(0, |r| r.start);
                let before = body[..at.min(body.len())].matches('\n').count() as u64;
                (snip.to_html(), doc.get_first(f.line).and_then(|v| v.as_u64()).map(|l| l + before))
            };
            let title = text(f.title);
            let t = title_snips.snippet(&title);
            hits.push(Hit {
                kind: text(f.kind),
                id: text(f.id),
                title: if t.is_empty() { mlbox_ui::svg::esc(&title) } else { t.to_html() },
                snippet,
                url: text(f.url),
                ts: doc.get_first(f.ts).and_then(|v| v.as_i64()).unwrap_or(0),
                line,
                score,
            });
        }
        Ok(Results { query: q.to_string(), total, hits })
    }

    /// Documents in the index now.
    pub fn len(&self) -> u64 {
        self.inner.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn err(e: TantivyError) -> Error {
    Error::internal(format!("search index: {e}"))
}

/// A query error a user can act on. Tantivy's strict parser names only the whole query, so the
/// lenient parser is asked where the problem is.
fn explain(parser: &QueryParser, q: &str, e: QueryParserError) -> String {
    use QueryParserError::*;
    match e {
        SyntaxError(_) => {
            let at = parser.parse_query_lenient(q).1.into_iter().find_map(|e| match e {
                SyntaxError(m) => Some(m),
                _ => None,
            });
            match at {
                Some(m) => format!(
                    "invalid query: {m}. Quote phrases (\"out of memory\"), close brackets, and write AND, OR, NOT between words"
                ),
                None => "invalid query: check quotes, brackets and AND/OR/NOT".to_string(),
            }
        }
        FieldDoesNotExist(field) => format!(
            "unknown field '{field}' (a word followed by ':' names a field); search the text with quotes, e.g. \"{field}: ...\", or use title: or body:"
        ),
        AllButQueryForbidden => "the query only excludes words (-x); add a word to look for".to_string(),
        ExpectedInt(_) | ExpectedFloat(_) | ExpectedBool(_) | ExpectedBase64(_) => {
            "a field in the query expects another type of value".to_string()
        }
        other => format!("invalid query: {other}"),
    }
}

/// Changes for the writer: replace a document, or delete by key or by parent.
#[derive(Debug)]
enum Op {
    Upsert(Doc),
    Delete(String),
    DeleteChildren(String),
}

fn writer_loop(
    mut w: IndexWriter,
    reader: IndexReader,
    f: Fields,
    src: Sources,
    rx: mpsc::Receiver<Msg>,
    rebuild_queued: Arc<std::sync::atomic::AtomicBool>,
) {
    // What changed since the last commit, each thing once; documents are built from the store
    // just before the commit, so a run that changed state 100 times is read once.
    let mut pending: Vec<Item> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    let mut since: Option<Instant> = None;
    loop {
        let wait = since.map_or(Duration::from_secs(3600), |t| COMMIT_EVERY.saturating_sub(t.elapsed()));
        let mut ack = None;
        let mut stop = false;
        match rx.recv_timeout(wait) {
            Ok(Msg::Item(item)) => {
                if keys.insert(item.key()) {
                    pending.push(item);
                }
            }
            Ok(Msg::Reindex(tx)) => {
                rebuild_queued.store(false, std::sync::atomic::Ordering::SeqCst);
                // A rebuild covers what is pending; what is queued but uncommitted in the writer
                // is dropped first, so no stale delete can hit the rebuilt documents.
                pending.clear();
                keys.clear();
                since = None;
                let r = rebuild(&mut w, f, &src);
                if let Err(e) = reader.reload() {
                    tracing::error!(error = %e, "Cannot reload the search reader");
                }
                match &r {
                    Ok(n) => tracing::info!(documents = n, "Search index rebuilt"),
                    Err(e) => tracing::error!(error = %e, "Rebuilding the search index failed"),
                }
                if let Some(tx) = tx {
                    let _ = tx.send(r.map(|_| reader.searcher().num_docs() as usize));
                }
                continue;
            }
            Ok(Msg::Flush(tx)) => ack = Some(tx),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => stop = true,
        }
        if !pending.is_empty() {
            since.get_or_insert_with(Instant::now);
        }
        let due = since.is_some_and(|t| t.elapsed() >= COMMIT_EVERY);
        if !pending.is_empty() && (due || ack.is_some() || stop) {
            for item in pending.drain(..) {
                match docs::build(&item, &src) {
                    Ok(ops) => {
                        apply(&w, f, ops);
                    }
                    Err(e) => tracing::warn!(?item, error = %e, "Cannot index"),
                }
            }
            keys.clear();
            if let Err(e) = w.commit() {
                tracing::error!(error = %e, "Search index commit failed; the batch is dropped");
                let _ = w.rollback();
            }
            if let Err(e) = reader.reload() {
                tracing::error!(error = %e, "Cannot reload the search reader");
            }
            since = None;
        }
        if let Some(tx) = ack {
            let _ = tx.send(());
        }
        if stop {
            let _ = w.wait_merging_threads();
            return;
        }
    }
}

/// Replace every document: drop what is uncommitted, delete all, add everything back run by run
/// (so memory holds one run's logs at a time), commit once. Readers see the old index until then.
fn rebuild(w: &mut IndexWriter, f: Fields, src: &Sources) -> Result<usize> {
    w.rollback().map_err(err)?;
    w.delete_all_documents().map_err(err)?;
    let mut n = 0;
    docs::everything(src, &mut |ops| n += apply(w, f, ops))?;
    w.commit().map_err(err)?;
    Ok(n)
}

/// Queue `ops` on the writer; returns how many there were.
fn apply(w: &IndexWriter, f: Fields, ops: Vec<Op>) -> usize {
    let n = ops.len();
    for op in ops {
        match op {
            Op::Upsert(d) => {
                w.delete_term(Term::from_field_text(f.id, &d.id));
                let mut doc = TantivyDocument::default();
                doc.add_text(f.kind, d.kind);
                doc.add_text(f.id, &d.id);
                for p in &d.parents {
                    doc.add_text(f.parent, p);
                }
                doc.add_text(f.title, &d.title);
                doc.add_text(f.body, &d.body);
                doc.add_i64(f.ts, d.ts);
                doc.add_text(f.url, &d.url);
                if let Some(l) = d.line {
                    doc.add_u64(f.line, l);
                }
                if let Err(e) = w.add_document(doc) {
                    tracing::warn!(id = %d.id, error = %e, "Cannot index a document");
                }
            }
            Op::Delete(id) => {
                w.delete_term(Term::from_field_text(f.id, &id));
            }
            Op::DeleteChildren(parent) => {
                w.delete_term(Term::from_field_text(f.parent, &parent));
            }
        }
    }
    n
}
