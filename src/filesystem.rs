//! What filesystem the lock directory is on, and whether lockd may run
//! there.
//!
//! On a local filesystem one kernel sees every lock file and every `flock`,
//! and lockd runs as it is. On a network or cluster filesystem (NFS,
//! GlusterFS and any other FUSE filesystem, CephFS, OCFS2, GFS2, …) several
//! nodes share the directory, and lockd is only safe when every node sees a
//! change of the others at once: `flock` shared between nodes, and no cache
//! serving a name or a content that another node has changed. Whether that
//! holds depends on how the filesystem is mounted, which lockd cannot fully
//! see; so lockd refuses to start there unless started with `--cluster-fs`,
//! the operator's word that the mount is set up as docs/cluster.md says.
//! Settings that lockd can see and that make `flock` local to one node are
//! refused even then, and so is a GlusterFS client that caches names,
//! attributes or contents ([`gluster_incoherence`]).

use std::fmt;
use std::path::{Path, PathBuf};

/// The filesystem a directory is on, as `/proc/self/mountinfo` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `ext4`, `nfs4`, `fuse.glusterfs`, `ceph`, …
    pub fs_type: String,
    pub mount_point: PathBuf,
    /// The mount's options and the filesystem's own, together.
    pub options: Vec<String>,
}

/// Why lockd will not run on a lock directory's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A shared filesystem, and no `--cluster-fs`.
    Unmarked { dir: PathBuf, mount: Mount },
    /// A setting that makes `flock` local to each node.
    LocalLocks {
        dir: PathBuf,
        mount: Mount,
        setting: String,
    },
    /// A GlusterFS client that caches names, attributes or contents
    /// ([`gluster_incoherence`]).
    Incoherent {
        dir: PathBuf,
        mount_point: PathBuf,
        setting: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unmarked { dir, mount } => write!(
                f,
                "the lock directory {} is on {} (mounted at {}), a network or cluster filesystem: there, every node must see the others' lock files and flocks at once, or two nodes can grant one resource, and that depends on how it is mounted (caches off, flock shared). Set it up as docs/cluster.md says, then start lockd with --cluster-fs",
                dir.display(),
                mount.fs_type,
                mount.mount_point.display()
            ),
            Refusal::LocalLocks {
                dir,
                mount,
                setting,
            } => write!(
                f,
                "the lock directory {} is on {} (mounted at {}) with {setting}, which keeps flock local to this node: lockd on another node would not be excluded, and two nodes could grant one resource. Mount it without {setting} (docs/cluster.md)",
                dir.display(),
                mount.fs_type,
                mount.mount_point.display()
            ),
            Refusal::Incoherent {
                dir,
                mount_point,
                setting,
            } => write!(
                f,
                "the lock directory {} is on a GlusterFS mount (at {}) whose client {setting}: one node would see another's lock files late, and two nodes could grant one resource. Mount it with attribute-timeout=0,entry-timeout=0,negative-timeout=0 and set performance.stat-prefetch, performance.quick-read and performance.open-behind off on the volume (docs/cluster.md, \"GlusterFS: mount and volume options\")",
                dir.display(),
                mount_point.display()
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Whether lockd may run on `dir`, whose mount is `mount`; `cluster_fs` is
/// `--cluster-fs`. `Ok(true)` on a shared filesystem, `Ok(false)` on a
/// local one.
pub fn check(dir: &Path, mount: &Mount, cluster_fs: bool) -> Result<bool, Refusal> {
    if !is_shared(&mount.fs_type) {
        return Ok(false);
    }
    if let Some(setting) = local_lock_setting(mount) {
        return Err(Refusal::LocalLocks {
            dir: dir.to_path_buf(),
            mount: mount.clone(),
            setting,
        });
    }
    if !cluster_fs {
        return Err(Refusal::Unmarked {
            dir: dir.to_path_buf(),
            mount: mount.clone(),
        });
    }
    Ok(true)
}

/// The kernel cache timeouts a GlusterFS FUSE client must run with, each 0
/// (its default is 1 s), as its command line shows them.
const GLUSTER_TIMEOUTS: [&str; 3] = ["attribute-timeout", "entry-timeout", "negative-timeout"];

/// The caching translators a GlusterFS client's graph must not have, with
/// the volume option that puts each there.
const GLUSTER_CACHES: [(&str, &str); 5] = [
    ("md-cache", "performance.stat-prefetch"),
    ("quick-read", "performance.quick-read"),
    ("open-behind", "performance.open-behind"),
    ("nl-cache", "performance.nl-cache"),
    ("io-cache", "performance.io-cache"),
];

/// For a FUSE mount of GlusterFS at `mount_point`: what of its client's
/// set-up serves one node stale names, attributes or contents, as the
/// client's own `.meta` directory shows it (the meta translator, at the
/// mount's root): its command line (`cmdline`, the mount's cache timeouts)
/// and the translators of its active graph (`graphs/active`, which a
/// `gluster volume set` changes at once). `Ok(None)`: set up as
/// docs/cluster.md says; an error: `.meta` could not be read.
pub fn gluster_incoherence(mount_point: &Path) -> std::io::Result<Option<String>> {
    let meta = mount_point.join(".meta");
    let cmdline = std::fs::read_to_string(meta.join("cmdline"))?;
    if let Some(setting) = timeouts_not_zero(&cmdline) {
        return Ok(Some(setting));
    }
    for entry in std::fs::read_dir(meta.join("graphs").join("active"))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        for (translator, option) in GLUSTER_CACHES {
            if name.ends_with(&format!("-{translator}")) {
                return Ok(Some(format!(
                    "has the {translator} translator in its graph ({option} is on)"
                )));
            }
        }
    }
    Ok(None)
}

/// The first kernel cache timeout a GlusterFS client's command line does not
/// set to 0, said as a setting.
fn timeouts_not_zero(cmdline: &str) -> Option<String> {
    for timeout in GLUSTER_TIMEOUTS {
        let flag = format!("--{timeout}=");
        let value = cmdline.split_whitespace().find_map(|arg| {
            arg.trim_matches(|c| c == '"' || c == ',')
                .strip_prefix(&flag)
                .map(str::to_owned)
        });
        match value {
            Some(v) if v.parse::<f64>().is_ok_and(|t| t == 0.0) => {}
            Some(v) => return Some(format!("runs with {timeout}={v}")),
            None => return Some(format!("runs without {timeout}=0 (it caches for 1 s)")),
        }
    }
    None
}

/// Whether a filesystem type is one that several nodes may share.
pub fn is_shared(fs_type: &str) -> bool {
    const SHARED: &[&str] = &[
        "nfs",
        "nfs4",
        "ceph",
        "ocfs2",
        "gfs",
        "gfs2",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "lustre",
        "gpfs",
        "beegfs",
        "glusterfs",
        "orangefs",
        "pvfs2",
        "virtiofs",
        "fuse",
        "fuseblk",
    ];
    SHARED.contains(&fs_type) || fs_type.starts_with("fuse.")
}

/// The mount of `dir` (canonical): from `/proc/self/mountinfo`, else
/// from statfs(2)'s type number, with no options.
pub fn mount_of_dir(dir: &Path) -> std::io::Result<Mount> {
    if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo")
        && let Some(mount) = mount_of(&mountinfo, dir)
    {
        return Ok(mount);
    }
    let magic = crate::sys::filesystem_magic(dir)?;
    Ok(Mount {
        fs_type: type_of_magic(magic).to_owned(),
        mount_point: dir.to_path_buf(),
        options: Vec::new(),
    })
}

/// The name of a shared filesystem's statfs(2) type number; `local` for
/// any other.
fn type_of_magic(magic: i64) -> &'static str {
    match magic {
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x00c3_6400 => "ceph",
        0x7461_636f => "ocfs2",
        0x0116_1970 => "gfs2",
        0xff53_4d42 | 0xfe53_4d42 => "cifs",
        0x0102_1997 => "9p",
        0x0bd0_0bd0 => "lustre",
        0x4750_4653 => "gpfs",
        0x1983_0326 => "beegfs",
        _ => "local",
    }
}

/// A mount option that keeps `flock` local to the node, if there is one.
fn local_lock_setting(mount: &Mount) -> Option<String> {
    mount.options.iter().find_map(|option| {
        let local = match option.split_once('=') {
            // NFS: flock (or all locks) handled by this node alone.
            Some(("local_lock", value)) => matches!(value, "flock" | "all"),
            // OCFS2: flocks local to the node.
            None => option == "localflocks",
            _ => false,
        };
        local.then(|| option.clone())
    })
}

/// The mount `path` is on, from the text of `/proc/self/mountinfo`: the
/// longest mount point that is a prefix of `path` (which must be canonical),
/// the last one mounted there if several are.
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        let Some(mount) = parse_line(line) else {
            continue;
        };
        if !path.starts_with(&mount.mount_point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| mount.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if longer {
            best = Some(mount);
        }
    }
    best
}

/// One line of mountinfo: `ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS
/// [OPTIONAL...] - TYPE SOURCE SUPER-OPTIONS`.
fn parse_line(line: &str) -> Option<Mount> {
    let (mine, theirs) = line.split_once(" - ")?;
    let fields: Vec<&str> = mine.split(' ').collect();
    let mount_point = unescape(fields.get(4)?);
    let options = fields.get(5)?;
    let mut theirs = theirs.split(' ');
    let fs_type = theirs.next()?.to_owned();
    let _source = theirs.next();
    let super_options = theirs.next().unwrap_or("");
    Some(Mount {
        fs_type,
        mount_point: PathBuf::from(mount_point),
        options: options
            .split(',')
            .chain(super_options.split(','))
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 0:40 / /srv/locks rw,relatime shared:20 - fuse.glusterfs 127.0.0.2:/locks rw,user_id=0,group_id=0,default_permissions,allow_other,max_read=131072
31 22 0:41 / /mnt/nfs rw,relatime - nfs4 server:/export rw,vers=4.2,local_lock=none,addr=10.0.0.1
32 22 0:42 / /mnt/nfs\\040local rw,relatime - nfs4 server:/other rw,vers=4.2,local_lock=flock
33 22 0:43 / /mnt/ocfs2 rw - ocfs2 /dev/sdb1 rw,localflocks
34 22 0:44 / /srv/locks/tmp rw - tmpfs tmpfs rw
";

    fn mount(path: &str) -> Mount {
        mount_of(MOUNTINFO, Path::new(path)).unwrap()
    }

    #[test]
    fn the_longest_mount_point_wins() {
        assert_eq!(mount("/var/lib/lockd").fs_type, "ext4");
        assert_eq!(mount("/srv/locks").fs_type, "fuse.glusterfs");
        assert_eq!(mount("/srv/locks/a").fs_type, "fuse.glusterfs");
        assert_eq!(mount("/srv/locks/tmp/x").fs_type, "tmpfs");
        assert_eq!(mount("/srv/locksmith").fs_type, "ext4");
        assert_eq!(
            mount("/mnt/nfs local/x").mount_point,
            Path::new("/mnt/nfs local")
        );
    }

    #[test]
    fn local_filesystems_run_as_they_are() {
        let dir = Path::new("/var/lib/lockd");
        assert_eq!(check(dir, &mount("/var/lib/lockd"), false), Ok(false));
        assert_eq!(check(dir, &mount("/srv/locks/tmp/x"), false), Ok(false));
    }

    #[test]
    fn shared_filesystems_need_cluster_fs() {
        let dir = Path::new("/srv/locks");
        let refused = check(dir, &mount("/srv/locks"), false).unwrap_err();
        assert!(matches!(refused, Refusal::Unmarked { .. }));
        let text = refused.to_string();
        assert!(
            text.contains("fuse.glusterfs") && text.contains("--cluster-fs"),
            "{text}"
        );
        assert!(text.contains("docs/cluster.md"), "{text}");
        assert_eq!(check(dir, &mount("/srv/locks"), true), Ok(true));
        assert_eq!(check(dir, &mount("/mnt/nfs/x"), true), Ok(true));
    }

    #[test]
    fn local_flocks_are_refused_even_with_cluster_fs() {
        for (path, setting) in [
            ("/mnt/nfs local/x", "local_lock=flock"),
            ("/mnt/ocfs2/x", "localflocks"),
        ] {
            let refused = check(Path::new(path), &mount(path), true).unwrap_err();
            assert!(
                matches!(&refused, Refusal::LocalLocks { setting: s, .. } if s == setting),
                "{refused}"
            );
        }
    }

    #[test]
    fn gluster_cache_timeouts_must_be_zero() {
        let good = r#"{ "Cmdlinestr": "/usr/sbin/glusterfs --log-file=/l --attribute-timeout=0 --entry-timeout=0 --negative-timeout=0 --volfile-id=/v /m" }"#;
        assert_eq!(timeouts_not_zero(good), None);
        let bad = good.replace("--entry-timeout=0", "--entry-timeout=1");
        assert_eq!(
            timeouts_not_zero(&bad).as_deref(),
            Some("runs with entry-timeout=1")
        );
        let missing = good.replace(" --negative-timeout=0", "");
        assert!(
            timeouts_not_zero(&missing).is_some_and(|s| s.contains("without negative-timeout=0"))
        );
        assert_eq!(
            timeouts_not_zero(&good.replace("timeout=0 ", "timeout=0.0 ")),
            None
        );
    }

    #[test]
    fn shared_types() {
        for shared in [
            "nfs",
            "nfs4",
            "ceph",
            "ocfs2",
            "gfs2",
            "fuse.sshfs",
            "fuse",
            "cifs",
        ] {
            assert!(is_shared(shared), "{shared}");
        }
        for local in ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs"] {
            assert!(!is_shared(local), "{local}");
        }
    }
}
