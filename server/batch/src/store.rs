//! Durable state: an embedded SQLite database (`<data-dir>/hhh.sqlite3`) for files, batches and
//! every committed line result, and the files' bytes under `<data-dir>/files/`.
//!
//! The resume rule: a line's result is one row keyed by `(batch_id, line)` (input files never
//! change and their `custom_id`s are unique, so a line is a `custom_id`), inserted in its own
//! transaction. After a restart (or `kill -9`) the runner skips every line that has a row, so no
//! finished line is lost or run twice; output files are written from the rows, in input order,
//! only when the batch ends.

use crate::error::BatchError;
use hhh_proto::batch::{Batch, FileObject};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Statuses after which a batch never changes.
pub const FINAL: &[&str] = &["completed", "failed", "expired", "cancelled"];

/// One committed line result.
#[derive(Debug, Clone)]
pub struct LineResult {
    /// 1-based line of the input file.
    pub line: u64,
    /// `None` for a line that could not be read.
    pub custom_id: Option<String>,
    /// Whether it goes to the output file (2xx) rather than the error file.
    pub ok: bool,
    /// The output line, serialized.
    pub json: String,
}

/// The database and the file directory. Every method is a short blocking call: callers on the
/// async runtime wrap them in `spawn_blocking`.
pub struct Store {
    conn: Mutex<Connection>,
    files: PathBuf,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, json TEXT NOT NULL, created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL, json TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    batch_id TEXT NOT NULL, line INTEGER NOT NULL, custom_id TEXT, ok INTEGER NOT NULL,
    json TEXT NOT NULL, PRIMARY KEY (batch_id, line)
);
";

impl Store {
    /// Open (or create) the store under `dir`, creating the directory.
    pub fn open(dir: &Path) -> Result<Self, BatchError> {
        let files = dir.join("files");
        std::fs::create_dir_all(&files).map_err(|e| BatchError::io(format!("creating {}", files.display()), e))?;
        let conn = Connection::open(dir.join("hhh.sqlite3"))?;
        // Several servers may share a data directory (tests, a second replica by mistake): wait
        // for another writer's lock instead of failing at once.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn), files })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (it has its own
        // transactions), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a file's bytes live.
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.files.join(id)
    }

    /// Write a file's bytes (to a temporary name, then renamed) and record it.
    pub fn put_file(&self, owner: &str, file: &FileObject, bytes: &[u8]) -> Result<(), BatchError> {
        let tmp = self.files.join(format!(".{}.tmp", file.id));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(BatchError::io(format!("writing file {}", file.id), e));
        }
        self.adopt_file(owner, file, &tmp)
    }

    /// A fresh temporary path in the file directory (for uploads streamed to disk).
    pub fn temp_path(&self) -> PathBuf {
        self.files.join(format!(".upload-{:016x}.tmp", rand::random::<u64>()))
    }

    /// Move an uploaded temporary file (see [`Self::temp_path`]) into place and record it.
    pub fn adopt_file(&self, owner: &str, file: &FileObject, tmp: &Path) -> Result<(), BatchError> {
        std::fs::rename(tmp, self.path_of(&file.id)).map_err(|e| BatchError::io(format!("storing file {}", file.id), e))?;
        let json = serde_json::to_string(file)?;
        self.db().execute("INSERT OR REPLACE INTO files (id, owner, json, created_at) VALUES (?1, ?2, ?3, ?4)", params![file.id, owner, json, file.created_at as i64])?;
        Ok(())
    }

    /// A file's metadata, if `owner` may see it.
    pub fn file(&self, owner: &str, id: &str) -> Result<Option<FileObject>, BatchError> {
        let json: Option<String> = self.db().query_row("SELECT json FROM files WHERE id = ?1 AND owner = ?2", params![id, owner], |r| r.get(0)).optional()?;
        Ok(match json {
            Some(j) => Some(serde_json::from_str(&j)?),
            None => None,
        })
    }

    /// `owner`'s files, newest first, optionally of one purpose.
    pub fn files(&self, owner: &str, purpose: Option<&str>, limit: usize) -> Result<Vec<FileObject>, BatchError> {
        let db = self.db();
        let mut q = db.prepare("SELECT json FROM files WHERE owner = ?1 ORDER BY created_at DESC, id DESC")?;
        let rows = q.query_map(params![owner], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for j in rows {
            let f: FileObject = serde_json::from_str(&j?)?;
            if purpose.is_none_or(|p| p == f.purpose) {
                out.push(f);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Forget a file and delete its bytes; false if `owner` has no such file.
    pub fn delete_file(&self, owner: &str, id: &str) -> Result<bool, BatchError> {
        let n = self.db().execute("DELETE FROM files WHERE id = ?1 AND owner = ?2", params![id, owner])?;
        if n > 0 {
            let _ = std::fs::remove_file(self.path_of(id));
        }
        Ok(n > 0)
    }

    /// Record a new batch or a change of one.
    pub fn put_batch(&self, owner: &str, b: &Batch) -> Result<(), BatchError> {
        let json = serde_json::to_string(b)?;
        self.db().execute(
            "INSERT INTO batches (id, owner, status, json, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, json = excluded.json",
            params![b.id, owner, b.status, json, b.created_at as i64],
        )?;
        Ok(())
    }

    /// A batch and its owner; `owner: None` reads any batch (the runner).
    pub fn batch(&self, owner: Option<&str>, id: &str) -> Result<Option<(String, Batch)>, BatchError> {
        let row: Option<(String, String)> = self.db().query_row("SELECT owner, json FROM batches WHERE id = ?1", params![id], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
        match row {
            Some((o, j)) if owner.is_none_or(|w| w == o) => Ok(Some((o, serde_json::from_str(&j)?))),
            _ => Ok(None),
        }
    }

    /// `owner`'s batches, newest first, after the batch `after` (pagination); one more than
    /// `limit` is read so that callers can tell whether there are more.
    pub fn batches(&self, owner: &str, after: Option<&str>, limit: usize) -> Result<Vec<Batch>, BatchError> {
        let db = self.db();
        let mut q = db.prepare("SELECT json FROM batches WHERE owner = ?1 ORDER BY created_at DESC, id DESC")?;
        let rows = q.query_map(params![owner], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        let mut started = after.is_none();
        for j in rows {
            let b: Batch = serde_json::from_str(&j?)?;
            if !started {
                started = after == Some(b.id.as_str());
                continue;
            }
            out.push(b);
            if out.len() > limit {
                break;
            }
        }
        Ok(out)
    }

    /// Ids of batches that are not final, oldest first (the runner's work list).
    pub fn unfinished(&self) -> Result<Vec<String>, BatchError> {
        let db = self.db();
        let mut q = db.prepare("SELECT id, status FROM batches ORDER BY created_at, id")?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, status) = r?;
            if !FINAL.contains(&status.as_str()) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// How many batches are in each status.
    pub fn status_counts(&self) -> Result<Vec<(String, i64)>, BatchError> {
        let db = self.db();
        let mut q = db.prepare("SELECT status, COUNT(*) FROM batches GROUP BY status")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Commit one line's result; false if that line already had one (never written twice).
    pub fn put_result(&self, batch_id: &str, r: &LineResult) -> Result<bool, BatchError> {
        let n =
            self.db().execute("INSERT OR IGNORE INTO results (batch_id, custom_id, line, ok, json) VALUES (?1, ?2, ?3, ?4, ?5)", params![batch_id, r.custom_id, r.line as i64, r.ok as i64, r.json])?;
        Ok(n > 0)
    }

    /// The lines with a committed result.
    pub fn done_lines(&self, batch_id: &str) -> Result<HashSet<u64>, BatchError> {
        let db = self.db();
        let mut q = db.prepare("SELECT line FROM results WHERE batch_id = ?1")?;
        let rows = q.query_map(params![batch_id], |r| r.get::<_, i64>(0).map(|l| l as u64))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Committed results in input order.
    pub fn results(&self, batch_id: &str) -> Result<Vec<LineResult>, BatchError> {
        let db = self.db();
        let mut q = db.prepare("SELECT line, custom_id, ok, json FROM results WHERE batch_id = ?1 ORDER BY line")?;
        let rows = q.query_map(params![batch_id], |r| Ok(LineResult { line: r.get::<_, i64>(0)? as u64, custom_id: r.get(1)?, ok: r.get::<_, i64>(2)? != 0, json: r.get(3)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// (completed, failed) committed so far.
    pub fn counts(&self, batch_id: &str) -> Result<(u64, u64), BatchError> {
        let (ok, bad): (i64, i64) = self.db().query_row("SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(1 - ok), 0) FROM results WHERE batch_id = ?1", params![batch_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((ok as u64, bad as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, t: u64) -> FileObject {
        FileObject { id: id.into(), object: "file".into(), bytes: 3, created_at: t, filename: "a.jsonl".into(), purpose: "batch".into(), status: "processed".into() }
    }

    #[test]
    fn files_results_and_owners_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_file("k1", &file("file-a", 1), b"abc").unwrap();
            s.put_file("k2", &file("file-b", 2), b"xyz").unwrap();
            assert!(s.put_result("batch_1", &LineResult { line: 2, custom_id: Some("b".into()), ok: true, json: "{}".into() }).unwrap());
            assert!(s.put_result("batch_1", &LineResult { line: 1, custom_id: None, ok: false, json: "{}".into() }).unwrap());
            assert!(!s.put_result("batch_1", &LineResult { line: 2, custom_id: Some("b".into()), ok: true, json: "{\"again\":1}".into() }).unwrap(), "a line is committed once");
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.file("k1", "file-a").unwrap().unwrap().id, "file-a");
        assert!(s.file("k2", "file-a").unwrap().is_none(), "another key's file is not visible");
        assert_eq!(std::fs::read(s.path_of("file-b")).unwrap(), b"xyz");
        assert_eq!(s.files("k1", None, 10).unwrap().len(), 1);
        let r = s.results("batch_1").unwrap();
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2], "input order");
        assert_eq!(s.done_lines("batch_1").unwrap().len(), 2);
        assert_eq!(r[1].json, "{}");
        assert_eq!(s.counts("batch_1").unwrap(), (1, 1));
        assert!(s.delete_file("k1", "file-a").unwrap());
        assert!(!s.path_of("file-a").exists());
        assert!(!s.delete_file("k1", "file-a").unwrap());
    }
}
