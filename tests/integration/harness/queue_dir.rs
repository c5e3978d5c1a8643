//! One filesystem queue's directories as a test sees them: what waits in `new/`, what is
//! claimed in `inprogress/`, what lies in `dead/`, and a careful producer's way of putting a
//! file there.

use super::id_of;
use std::fs;
use std::path::PathBuf;

/// One queue's directories: `new/`, `inprogress/`, `dead/`.
pub struct QueueDir {
    pub path: PathBuf,
}

impl QueueDir {
    fn list(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path.join(sub))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    pub fn new_files(&self) -> Vec<String> {
        self.list("new")
    }
    pub fn inprogress(&self) -> Vec<String> {
        self.list("inprogress")
    }
    pub fn dead(&self) -> Vec<String> {
        self.list("dead")
    }
    /// How many dead letters are complete: the message file and its `.reason` beside it,
    /// fully written (the reason is written after the message is moved).
    pub fn dead_letters(&self) -> usize {
        let dead = self.dead();
        dead.iter()
            .filter(|n| n.ends_with(".job"))
            .filter(|n| {
                dead.contains(&format!("{n}.reason"))
                    && self.read("dead", &format!("{n}.reason")).ends_with('\n')
            })
            .count()
    }
    /// Neither waiting nor claimed messages are left.
    pub fn is_idle(&self) -> bool {
        self.new_files().is_empty() && self.inprogress().is_empty()
    }
    pub fn read(&self, sub: &str, name: &str) -> String {
        fs::read_to_string(self.path.join(sub).join(name)).unwrap_or_default()
    }
    /// Put a file into `sub/` atomically (written under a dot name, which every consumer
    /// skips, then renamed), as a careful producer would.
    pub fn put(&self, sub: &str, name: &str, content: &[u8]) {
        let dir = self.path.join(sub);
        fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, content).unwrap();
        fs::rename(&tmp, dir.join(name)).unwrap();
    }
    /// Is message `id` anywhere in `new/` or `inprogress/`?
    pub fn holds(&self, id: &str) -> bool {
        self.new_files()
            .iter()
            .chain(self.inprogress().iter())
            .any(|n| id_of(n) == id)
    }
}
