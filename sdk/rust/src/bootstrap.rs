use std::collections::BTreeMap;
use std::path::PathBuf;

/// What the host tells a module process at start (docs/protocol.md section 1): its id, its
/// data directory, the channel's descriptor and its configuration as environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `--module-id`, else `MODULE_ID`.
    pub module_id: Option<String>,
    /// `--data-dir`, else `DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `MODHOST_FD`, default 3.
    pub fd: i32,
    /// `MODULE_CONFIG_<KEY>` variables, keyed by `<KEY>` (upper case, as the host wrote it).
    /// Strings as they are; tables and arrays as JSON text.
    pub config_env: BTreeMap<String, String>,
}

impl Bootstrap {
    /// From this process's arguments and environment.
    pub fn from_env() -> Bootstrap {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let env: Vec<(String, String)> = std::env::vars().collect();
        Bootstrap::from_parts(&args, &env)
    }

    /// From explicit arguments (without the program name) and environment, for tests.
    /// Accepts `--module-id ID` and `--module-id=ID` (likewise `--data-dir`); other arguments
    /// are ignored. Arguments win over the environment.
    pub fn from_parts(args: &[String], env: &[(String, String)]) -> Bootstrap {
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut module_id = None;
        let mut data_dir = None;
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            for (flag, slot) in [("--module-id", &mut module_id), ("--data-dir", &mut data_dir)] {
                if a == flag {
                    if let Some(v) = args.get(i + 1) {
                        *slot = Some(v.clone());
                        i += 1;
                    }
                } else if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                    *slot = Some(v.to_owned());
                }
            }
            i += 1;
        }
        let fd = lookup("MODHOST_FD").and_then(|v| v.trim().parse().ok()).unwrap_or(3);
        let config_env = env
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("MODULE_CONFIG_").map(|key| (key.to_owned(), v.clone())))
            .collect();
        Bootstrap {
            module_id: module_id.or_else(|| lookup("MODULE_ID")),
            data_dir: data_dir.or_else(|| lookup("DATA_DIR")).map(PathBuf::from),
            fd,
            config_env,
        }
    }
}
