//! A small real filesystem for the sick-disk tests: an ext4 image of a few MB on a loop
//! device, mounted with `errors=remount-ro` on a temporary directory. A test fills it to
//! 100 %, frees it, and makes the kernel turn it read-only the way a failing disk does
//! (an ext4 error, raised through the filesystem's own `trigger_fs_error` switch in sysfs:
//! the kernel remounts it read-only with files open, and writes fail with `EROFS`). Like
//! on a real machine, it comes back only through an unmount and `e2fsck`.
//!
//! Mounting needs root (CI runs as root, and `scripts/test` installs packages as root). Run
//! as anyone else, [`SmallDisk::mount`] fails with a message saying so: a test that needs
//! a full disk does not skip silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted ext4 image; unmounted on drop.
#[derive(Debug)]
pub struct SmallDisk {
    dir: tempfile::TempDir,
    path: PathBuf,
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl SmallDisk {
    /// Makes and mounts an ext4 filesystem of `megabytes` MB (no blocks reserved for root,
    /// so that root's gateway meets a full disk too).
    pub fn mount(megabytes: u32) -> Result<SmallDisk, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("this test mounts a small ext4 image to fill it and needs root (run the suite as root, as CI does)".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(u64::from(megabytes) << 20))
            .map_err(|e| e.to_string())?;
        run(&["mkfs.ext4", "-q", "-F", "-m", "0", image.to_str().unwrap()])?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let disk = SmallDisk { dir, path };
        disk.attach()?;
        Ok(disk)
    }

    fn attach(&self) -> Result<(), String> {
        let image = self.dir.path().join("disk.img");
        run(&["mount", "-o", "loop,errors=remount-ro", image.to_str().unwrap(), self.path.to_str().unwrap()])
            .map(drop)
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills it to 100 % with a file `filler`; returns the bytes written.
    pub fn fill(&self) -> u64 {
        let mut file =
            std::fs::File::create(self.path.join("filler")).expect("the filler file can be created");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        // Down to single bytes, so that not even a small SQLite page fits any more.
        for size in [64 * 1024, 4096, 512, 1] {
            while file.write_all(&chunk[..size]).and_then(|()| file.flush()).is_ok() {
                written += size as u64;
            }
        }
        let _ = file.sync_all();
        written
    }

    /// Deletes the filler file.
    pub fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).expect("the filler file can be removed");
    }

    /// Raises an ext4 error: the kernel remounts the filesystem read-only at once, open
    /// files and all (`errors=remount-ro`).
    pub fn fail_read_only(&self) {
        let source = run(&["findmnt", "-n", "-o", "SOURCE", self.path.to_str().unwrap()]).unwrap();
        let device = Path::new(&source).file_name().unwrap().to_str().unwrap().to_owned();
        std::fs::write(format!("/sys/fs/ext4/{device}/trigger_fs_error"), "firegrid sick-disk test\n")
            .expect("ext4 takes a triggered error");
    }

    /// Repairs it as an operator would after a read-only remount: unmount (whoever used it
    /// must have stopped), `e2fsck -fy`, mount again.
    pub fn repair(&self) {
        run(&["umount", self.path.to_str().unwrap()]).unwrap();
        let image = self.dir.path().join("disk.img");
        // Exit status 1 means "errors corrected", which is the point.
        let status = Command::new("e2fsck").args(["-fy", image.to_str().unwrap()]).output().unwrap().status;
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
        self.attach().unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a gateway still holding files open does not keep it mounted.
        let _ = run(&["umount", "-l", self.path.to_str().unwrap()]);
    }
}
