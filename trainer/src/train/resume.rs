//! What `--resume` may change: a resumed run takes more epochs, another evaluation
//! cadence or another device; any other changed setting would make it another run and is
//! refused by name.

use std::path::PathBuf;

use tracing::info;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::run::RunDir;

/// Settings a resumed run may change; any other difference from the run's config is refused.
pub const RESUMABLE_KEYS: [&str; 6] =
    ["optim.epochs", "eval_every", "checkpoint_every", "threads", "device", "data.eval_limit"];

/// The configuration a resumed run continues with, and its latest checkpoint: the run's
/// own, or `changed` (built from the run's own plus flags) when it differs only in
/// [`RESUMABLE_KEYS`]; a changed config is saved to the run's `config.toml`.
pub fn resumed_config(run: &RunDir, changed: Option<TrainConfig>) -> Result<(TrainConfig, Option<PathBuf>)> {
    let saved = run.config()?;
    let ck = run.latest_checkpoint();
    let Some(new) = changed.filter(|new| *new != saved) else {
        return Ok((saved, ck));
    };
    let diff = config_diff(&saved, &new)?;
    let refused: Vec<&str> = diff.iter().map(String::as_str).filter(|k| !RESUMABLE_KEYS.contains(k)).collect();
    if !refused.is_empty() {
        // The run's metrics and pictures measure its served head: another one is read from
        // the finished run instead.
        let head = if refused.contains(&"model.served_head") {
            "; the other head of this run is at hand without training: `trainer eval --run RUN --head f|g`, \
             `trainer export --run RUN --head f|g`"
        } else {
            ""
        };
        return Err(TrainError::Run {
            path: run.root.clone(),
            reason: format!(
                "--resume keeps a run's settings, but these differ from its config.toml: {}; drop those \
                 flags, or start a new run with another --out (a resumed run may change only {}){head}",
                refused.join(", "),
                RESUMABLE_KEYS.join(", ")
            ),
        });
    }
    let done = match &ck {
        Some(c) => RunDir::read_state(c)?.epochs_done,
        None => 0,
    };
    if new.optim.epochs < done {
        return Err(TrainError::Run {
            path: run.root.clone(),
            reason: format!("has done {done} epochs already; --epochs {} would undo them", new.optim.epochs),
        });
    }
    new.validate()?;
    info!("resuming with changed settings: {}", diff.join(", "));
    run.write_file("config.toml", new.to_toml().as_bytes())?;
    Ok((new, ck))
}

/// Dotted keys whose values differ between two configs.
pub fn config_diff(a: &TrainConfig, b: &TrainConfig) -> Result<Vec<String>> {
    fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(x), toml::Value::Table(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    match (x.get(k), y.get(k)) {
                        (Some(u), Some(v)) => walk(&p, u, v, out),
                        _ => out.push(p),
                    }
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let value = |c: &TrainConfig| {
        toml::Value::try_from(c).map_err(|e| TrainError::Config(format!("the configuration does not serialise: {e}")))
    };
    let mut out = Vec::new();
    walk("", &value(a)?, &value(b)?, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeadInit;

    #[test]
    fn config_diff_names_the_changed_keys() {
        let a = TrainConfig::defaults("x".into());
        let mut b = a.clone();
        assert!(config_diff(&a, &b).unwrap().is_empty());
        b.optim.epochs = 7;
        b.stml.sigma = 2.0;
        b.data.eval_data = Some("y".into());
        assert_eq!(config_diff(&a, &b).unwrap(), ["data.eval_data", "optim.epochs", "stml.sigma"]);
    }

    #[test]
    fn presets_differ_only_where_documented() {
        let d = TrainConfig::preset(crate::config::Preset::Default, "x".into());
        let p = TrainConfig::preset(crate::config::Preset::Paper, "x".into());
        assert_eq!(
            config_diff(&p, &d).unwrap(),
            [
                "head_init",
                "model.served_head",
                "optim.bn_freeze",
                "optim.emb_lr",
                "optim.lr",
                "stml.crop_scale",
                "stml.known_positives",
                "stml.label_weight"
            ]
        );
        assert_eq!((p.model.served_head, d.model.served_head), (models::Head::F, models::Head::G));
        assert_eq!(p.head_init, HeadInit::Orthogonal);
        assert_eq!(p.stml.crop_scale, crate::config::PAPER_CROP_SCALE);
        assert!(!p.optim.bn_freeze && p.optim.warmup_epochs == 0.0);
    }
}
