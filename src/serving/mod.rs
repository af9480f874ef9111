//! Model serving: the versions aliases point at, loaded in memory and answering predictions.
//!
//! Each registered model has a slot of alias → loaded version. A request takes an `Arc` of the
//! version under the alias it asks for (default `production`) and predicts with it, so a swap
//! never disturbs a request in flight: the old version lives until its last request ends.
//!
//! Moving an alias (`promote`) first loads the new version and smoke-tests it with one
//! inference; only then is the move committed to the registry and the slot swapped. A version
//! that fails to load or to predict never takes an alias.

pub mod log;
pub mod predict;
pub mod signature;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::{Code, Error, Result};
use crate::registry::{self, ModelUri, Selector};
use crate::store::{Store, now_us};
use crate::train::{self, Loaded, ModelRef};
pub use log::Stats;
use signature::{Batch, Output, Signature};

/// A model version in memory, ready to predict.
pub struct Ready {
    pub model: String,
    pub version: i64,
    pub sha256: String,
    pub kind: String,
    pub signature: Signature,
    pub loaded: Loaded,
    /// Shared with every later load of the same version: counters survive unload and reload.
    pub stats: Arc<Stats>,
    pub loaded_at: i64,
}

impl Ready {
    pub fn predict(&self, b: &Batch) -> std::result::Result<Vec<Output>, String> {
        predict::predict(&self.loaded, b)
    }
}

#[derive(Default)]
struct Slot {
    aliases: HashMap<String, Arc<Ready>>,
    /// Why an alias's version is not served (it failed to load at start).
    failed: HashMap<String, String>,
    /// Unloaded through the model repository API: nothing is served until it is loaded again.
    unloaded: bool,
}

struct Inner {
    store: Store,
    data_dir: PathBuf,
    slots: RwLock<HashMap<String, Slot>>,
    /// Every loaded version by (model, version), aliased or asked for by number.
    versions: Mutex<HashMap<(String, i64), Arc<Ready>>>,
    /// One alias move at a time.
    moving: Mutex<()>,
    /// Request counters per (model, version) since the process started.
    stats: Mutex<HashMap<(String, i64), Arc<Stats>>>,
    events: broadcast::Sender<Value>,
    log: log::PredictionLog,
}

/// Handle to the serving state; cheap to clone.
#[derive(Clone)]
pub struct Serving {
    inner: Arc<Inner>,
}

/// Loaded versions kept besides the aliased ones (asked for by number).
const SPARE_VERSIONS: usize = 8;

impl Serving {
    /// Load every aliased version. A version that fails to load is logged and reported as not
    /// ready; the others serve.
    pub fn open(store: Store, data_dir: PathBuf, log_rate: u32, log_keep: u32) -> Result<Serving> {
        let (events, _) = broadcast::channel(1024);
        let s = Serving {
            inner: Arc::new(Inner {
                log: log::PredictionLog::new(store.clone(), log_rate, log_keep),
                store,
                data_dir,
                slots: RwLock::default(),
                versions: Mutex::default(),
                moving: Mutex::default(),
                stats: Mutex::default(),
                events,
            }),
        };
        s.load_model(None)?;
        Ok(s)
    }

    /// Model promotions, swaps, loads and unloads, as JSON events.
    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.inner.events.subscribe()
    }

    fn emit(&self, kind: &str, mut v: Value) {
        v["kind"] = json!(kind);
        v["at"] = json!(now_us());
        let _ = self.inner.events.send(v);
    }

    pub fn log(&self) -> &log::PredictionLog {
        &self.inner.log
    }

    /// (Re)load the aliased versions of one model (None: of every model) into their slots.
    fn load_model(&self, only: Option<&str>) -> Result<()> {
        // Under the move lock, so a promotion cannot commit between reading the aliases and
        // filling the slots (which would put the previous version back).
        let _one = self.inner.moving.lock().expect("moving lock");
        let aliases = self.inner.store.read(registry::all_aliases)?;
        for (model, alias, version) in aliases.into_iter().filter(|(m, _, _)| only.is_none_or(|o| o == m)) {
            match self.load_version(&model, version) {
                Ok(r) => {
                    let mut slots = self.inner.slots.write().expect("slots lock");
                    let slot = slots.entry(model).or_default();
                    slot.failed.remove(&alias);
                    slot.aliases.insert(alias, r);
                }
                Err(e) => {
                    tracing::error!(%model, %alias, version, error = %e.message, "Cannot serve model version");
                    let mut slots = self.inner.slots.write().expect("slots lock");
                    let slot = slots.entry(model).or_default();
                    slot.aliases.remove(&alias);
                    slot.failed.insert(alias, format!("version {version} failed to load: {}", e.message));
                }
            }
        }
        Ok(())
    }

    /// A loaded, smoke-tested version (from memory if it is loaded already).
    pub fn load_version(&self, model: &str, version: i64) -> Result<Arc<Ready>> {
        let key = (model.to_string(), version);
        if let Some(r) = self.inner.versions.lock().expect("versions lock").get(&key) {
            return Ok(r.clone());
        }
        let ver = self.inner.store.read(|c| registry::version(c, model, version))?;
        let mref = ModelRef { sha256: ver.sha256.clone(), kind: ver.kind.clone(), experiment: None };
        let unusable = |e: String| Error::new(Code::Unavailable, format!("version {version} of `{model}` {e}"));
        let (_, loaded) =
            train::load(&self.inner.data_dir, &mref).map_err(|e| unusable(format!("cannot load: {e}")))?;
        smoke_test(&loaded).map_err(|e| unusable(format!("failed its smoke test: {e}")))?;
        let ready = Arc::new(Ready {
            model: model.to_string(),
            version,
            sha256: ver.sha256,
            kind: ver.kind,
            signature: predict::signature(&loaded),
            loaded,
            stats: self.inner.stats.lock().expect("stats lock").entry(key.clone()).or_default().clone(),
            loaded_at: now_us(),
        });
        let mut versions = self.inner.versions.lock().expect("versions lock");
        let r = versions.entry(key).or_insert(ready).clone();
        self.evict(&mut versions);
        Ok(r)
    }

    /// Drop loaded versions no alias serves, beyond a few spares.
    fn evict(&self, versions: &mut HashMap<(String, i64), Arc<Ready>>) {
        let slots = self.inner.slots.read().expect("slots lock");
        let aliased = |k: &(String, i64)| slots.get(&k.0).is_some_and(|s| s.aliases.values().any(|r| r.version == k.1));
        let mut spare: Vec<(String, i64)> = versions.keys().filter(|k| !aliased(k)).cloned().collect();
        if spare.len() > SPARE_VERSIONS {
            spare.sort_by_key(|k| versions[k].loaded_at);
            for k in &spare[..spare.len() - SPARE_VERSIONS] {
                versions.remove(k);
            }
        }
    }

    /// The version serving `alias` now, without touching the store: the request fast path.
    pub fn cached(&self, model: &str, selector: &Selector) -> Option<Arc<Ready>> {
        match selector {
            Selector::Alias(a) => {
                let slots = self.inner.slots.read().expect("slots lock");
                slots.get(model).filter(|s| !s.unloaded).and_then(|s| s.aliases.get(a)).cloned()
            }
            Selector::Version(v) => {
                let slots = self.inner.slots.read().expect("slots lock");
                if slots.get(model).is_some_and(|s| s.unloaded) {
                    return None;
                }
                drop(slots);
                self.inner.versions.lock().expect("versions lock").get(&(model.to_string(), *v)).cloned()
            }
        }
    }

    /// The version to serve, loading a numbered version on demand; otherwise why not:
    /// 404 for an unknown model or version, 503 for one that exists but is not ready.
    pub fn resolve(&self, uri: &ModelUri) -> Result<Arc<Ready>> {
        if let Some(r) = self.cached(&uri.name, &uri.selector) {
            return Ok(r);
        }
        let model = self.inner.store.read(|c| registry::get(c, &uri.name))?;
        {
            let slots = self.inner.slots.read().expect("slots lock");
            let slot = slots.get(&uri.name);
            if slot.is_some_and(|s| s.unloaded) {
                return Err(Error::new(
                    Code::Unavailable,
                    format!(
                        "model `{}` is unloaded; load it with POST /v2/repository/models/{}/load",
                        uri.name, uri.name
                    ),
                ));
            }
            if let Selector::Alias(a) = &uri.selector {
                if let Some(why) = slot.and_then(|s| s.failed.get(a)) {
                    return Err(Error::new(Code::Unavailable, format!("model `{}`@{a} is not ready: {why}", uri.name)));
                }
                if !model.aliases.contains_key(a) {
                    return Err(Error::new(
                        Code::Unavailable,
                        format!(
                            "model `{}` has no version under the alias `{a}` yet; promote one (mlbox models promote {} VERSION --alias {a})",
                            uri.name, uri.name
                        ),
                    ));
                }
            }
        }
        match &uri.selector {
            Selector::Version(v) => {
                let ver = self.inner.store.read(|c| registry::version(c, &uri.name, *v))?;
                if ver.archived {
                    return Err(Error::not_found(format!("version {v} of `{}` is archived", uri.name)));
                }
                self.load_version(&uri.name, *v)
            }
            // The alias exists but is not in memory yet (moved by another path): load it now.
            Selector::Alias(a) => {
                self.load_model(Some(&uri.name))?;
                self.cached(&uri.name, &uri.selector)
                    .ok_or_else(|| Error::new(Code::Unavailable, format!("model `{}`@{a} is not ready", uri.name)))
            }
        }
    }

    /// Move `alias` to `version`: load and smoke-test it, commit the move with who and why,
    /// then swap it in. Requests keep being answered by the previous version until the swap.
    pub fn promote(&self, model: &str, alias: &str, version: i64, actor: &str, reason: &str) -> Result<Value> {
        registry::check_alias(alias)?;
        let _one = self.inner.moving.lock().expect("moving lock");
        let ver = self.inner.store.read(|c| registry::version(c, model, version))?;
        if ver.archived {
            return Err(Error::conflict(format!(
                "version {version} of `{model}` is archived and cannot take an alias; unarchive it first"
            )));
        }
        let ready = self.load_version(model, version)?;
        let (m, a, who, why) = (model.to_string(), alias.to_string(), actor.to_string(), reason.to_string());
        let moved =
            self.inner.store.write(move |tx| registry::set_alias(tx, &m, &a, Some(version), &who, &why, now_us()))?;
        let previous = {
            let mut slots = self.inner.slots.write().expect("slots lock");
            let slot = slots.entry(model.to_string()).or_default();
            slot.failed.remove(alias);
            if slot.unloaded { None } else { slot.aliases.insert(alias.to_string(), ready).map(|r| r.version) }
        };
        if let Some(mv) = &moved {
            tracing::info!(model, alias, from = ?mv.from_version, to = version, actor, "Alias moved");
            self.emit("promotion", json!(mv));
            self.emit("swap", json!({"model": model, "alias": alias, "version": version, "previous": previous}));
        }
        let mut versions = self.inner.versions.lock().expect("versions lock");
        self.evict(&mut versions);
        Ok(json!({"model": model, "alias": alias, "version": version, "moved": moved.is_some(),
                  "from_version": moved.as_ref().and_then(|m| m.from_version)}))
    }

    /// Stop serving a version by number (it was archived).
    pub fn forget_version(&self, model: &str, version: i64) {
        self.inner.versions.lock().expect("versions lock").remove(&(model.to_string(), version));
    }

    /// Remove an alias: nothing is served under it any more.
    pub fn remove_alias(&self, model: &str, alias: &str, actor: &str, reason: &str) -> Result<Value> {
        let _one = self.inner.moving.lock().expect("moving lock");
        let (m, a, who, why) = (model.to_string(), alias.to_string(), actor.to_string(), reason.to_string());
        let moved = self.inner.store.write(move |tx| registry::set_alias(tx, &m, &a, None, &who, &why, now_us()))?;
        if let Some(slot) = self.inner.slots.write().expect("slots lock").get_mut(model) {
            slot.aliases.remove(alias);
        }
        if let Some(mv) = &moved {
            self.emit("promotion", json!(mv));
        }
        Ok(json!({"model": model, "alias": alias, "removed": moved.is_some()}))
    }

    /// The model repository extension: load (serve again) and unload (stop serving) a model.
    pub fn set_loaded(&self, model: &str, load: bool) -> Result<Value> {
        self.inner.store.read(|c| registry::get(c, model))?;
        {
            let mut slots = self.inner.slots.write().expect("slots lock");
            let slot = slots.entry(model.to_string()).or_default();
            slot.unloaded = !load;
            if !load {
                slot.aliases.clear();
                slot.failed.clear();
            }
        }
        if load {
            self.load_model(Some(model))?;
        } else {
            self.inner.versions.lock().expect("versions lock").retain(|k, _| k.0 != model);
        }
        self.emit(if load { "load" } else { "unload" }, json!({"model": model}));
        Ok(json!({"model": model, "loaded": load}))
    }

    /// Every registered model with what serves under `production` (the repository index).
    pub fn index(&self) -> Result<Vec<Value>> {
        let models = self.inner.store.read(registry::list)?;
        Ok(models
            .into_iter()
            .map(|m| {
                let uri = ModelUri { name: m.name.clone(), selector: Selector::Alias(registry::PRODUCTION.into()) };
                match self.cached(&m.name, &uri.selector) {
                    Some(r) => json!({"name": m.name, "version": r.version.to_string(), "state": "READY"}),
                    None => {
                        let reason = self.resolve(&uri).err().map(|e| e.message).unwrap_or_default();
                        json!({"name": m.name, "version": m.aliases.get(registry::PRODUCTION).map(|v| v.to_string()),
                               "state": "UNAVAILABLE", "reason": reason})
                    }
                }
            })
            .collect())
    }

    /// Every version served since the process started: its request counters and latency
    /// histogram, whether it is loaded, and the aliases it serves.
    pub fn stats(&self) -> Vec<Value> {
        let stats = self.inner.stats.lock().expect("stats lock").clone();
        let versions = self.inner.versions.lock().expect("versions lock");
        let slots = self.inner.slots.read().expect("slots lock");
        let mut out: Vec<Value> = stats
            .iter()
            .map(|((model, version), st)| {
                let aliases: Vec<&String> = slots
                    .get(model)
                    .map(|s| s.aliases.iter().filter(|(_, v)| v.version == *version).map(|(a, _)| a).collect())
                    .unwrap_or_default();
                let loaded = versions.get(&(model.clone(), *version)).map(|r| r.loaded_at);
                json!({"model": model, "version": version, "aliases": aliases, "loaded": loaded.is_some(),
                       "loaded_at": loaded, "stats": st.snapshot()})
            })
            .collect();
        out.sort_by_key(|v| (v["model"].as_str().unwrap_or("").to_string(), v["version"].as_i64()));
        out
    }
}

/// One inference on the model's own example input: finite outputs of the declared sizes.
fn smoke_test(m: &Loaded) -> std::result::Result<(), String> {
    let outs = predict::predict(m, &predict::example(m))?;
    let sig = predict::signature(m);
    for (o, f) in outs.iter().zip(&sig.outputs) {
        let want = f.shape.first().map(|n| *n as usize).unwrap_or(1);
        if o.data.len() != want || o.data.iter().any(|x| !x.is_finite()) {
            return Err(format!("output `{}` was {:?}, expected {want} finite numbers", o.name, o.data));
        }
    }
    Ok(())
}

/// What to register: a model file, and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub name: String,
    pub sha256: String,
    /// The tracked experiment that trained it: its run, task, params, datasets and metrics
    /// become the version's lineage.
    pub experiment: Option<i64>,
    /// An `evaluate` task's outputs: its `blessed` and metrics are kept with the version.
    pub evaluation: Value,
    pub metrics: Value,
    pub description: String,
    pub tags: Value,
    pub run_id: Option<i64>,
    pub task_id: Option<String>,
    pub map_index: i64,
    pub created_by: String,
}

impl Serving {
    /// Register a model file as the next version of `name`. The file must load and pass the
    /// smoke test, so a version that cannot serve is never registered.
    pub fn register(&self, r: Registration) -> Result<registry::Version> {
        registry::check_name(&r.name)?;
        if !crate::artifacts::is_sha256(&r.sha256) {
            return Err(Error::bad_request(format!("`{}` is not a model file's sha256 (64 hex digits)", r.sha256)));
        }
        let mref = ModelRef { sha256: r.sha256.clone(), kind: String::new(), experiment: None };
        let (header, loaded) = train::load(&self.inner.data_dir, &mref).map_err(Error::bad_request)?;
        smoke_test(&loaded).map_err(|e| Error::bad_request(format!("the model failed its smoke test: {e}")))?;
        let exp = match r.experiment {
            Some(id) => Some(
                self.inner
                    .store
                    .read(|c| crate::store::experiments::get(c, id))?
                    .ok_or_else(|| Error::not_found(format!("no experiment {id}")))?,
            ),
            None => None,
        };
        let mut metrics = serde_json::Map::new();
        if let Some(e) = &exp {
            metrics.extend(e.metrics.iter().map(|(k, v)| (k.clone(), json!(v))));
        }
        if let Some(m) = r.evaluation.get("metrics").and_then(Value::as_object) {
            metrics.extend(m.iter().filter(|(k, _)| *k != "count").map(|(k, v)| (format!("eval_{k}"), v.clone())));
        }
        if let Some(m) = r.metrics.as_object() {
            metrics.extend(m.clone());
        }
        let lineage = json!({
            "experiment": exp.as_ref().map(|e| e.id),
            "run_id": exp.as_ref().map(|e| e.run_id),
            "task_id": exp.as_ref().map(|e| e.task_id.clone()),
            "pipeline": exp.as_ref().map(|e| e.pipeline.clone()),
            "pipeline_version": exp.as_ref().map(|e| e.spec_hash.clone()),
            "params": exp.as_ref().map(|e| e.params.clone()),
            "datasets": exp.as_ref().map(|e| e.datasets.clone()).unwrap_or_else(|| header["datasets"].clone()),
            "trained_at": header["trained_at"],
            "weights_sha256": header["weights_sha256"],
        });
        let blessed = r.evaluation.get("blessed").and_then(Value::as_bool);
        let evaluation = if r.evaluation.is_null() {
            Value::Null
        } else {
            json!({"blessed": blessed, "why_not": r.evaluation.get("why_not"), "dataset": r.evaluation.get("dataset"),
                   "metrics": r.evaluation.get("metrics"), "baselines": r.evaluation.get("baselines")})
        };
        let n = registry::NewVersion {
            model: r.name,
            sha256: r.sha256,
            kind: header["kind"].as_str().unwrap_or("").to_string(),
            signature: json!(predict::signature(&loaded)),
            metrics: Value::Object(metrics),
            blessed,
            evaluation,
            lineage,
            description: r.description,
            tags: r.tags,
            run_id: r.run_id,
            task_id: r.task_id,
            map_index: r.map_index,
            created_by: r.created_by,
        };
        let v = self.inner.store.write(move |tx| registry::register(tx, &n, now_us()))?;
        self.emit("registered", json!({"model": v.model, "version": v.version}));
        Ok(v)
    }
}
