//! Training: the Burn device, seeded initialisation, the epoch loop with checkpoints and early
//! stopping, and the model artifact format. The two model families live in [`forecast`] (LSTM over
//! windows of series) and [`tabular`] + [`wide_deep`] (the taxi wide&deep model).
//!
//! Determinism: parameters are initialised under a process-wide lock right after seeding the
//! device (Burn's CPU RNG is global), and every other random choice (batch order, dropout masks)
//! comes from our own generator seeded by (seed, epoch), so a resumed training replays exactly
//! what an uninterrupted one would have done.

pub mod forecast;
pub mod lstm;
pub mod metrics;
pub mod models;
pub mod tabular;
pub mod wide_deep;
pub mod windows;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The CPU device the trainers use (`flex`, or `ndarray` with that cargo feature).
pub fn device() -> Device {
    #[cfg(feature = "ndarray")]
    {
        Device::ndarray()
    }
    #[cfg(not(feature = "ndarray"))]
    {
        Device::flex()
    }
}

static INIT: Mutex<()> = Mutex::new(());

/// Build a model with parameters drawn from `seed`, and materialise them while holding the lock,
/// so concurrent trainings cannot interleave draws from Burn's global RNG.
pub fn init_seeded<M: Module>(seed: u64, device: &Device, make: impl Fn(&Device) -> M) -> M {
    let _g = INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    let record = make(device).into_record();
    make(device).load_record(record)
}

pub fn to_bytes<M: Module>(m: &M) -> Result<Vec<u8>, String> {
    Ok(m.clone().into_record().into_bytes().map_err(|e| format!("cannot serialise the model: {e:?}"))?.to_vec())
}

/// SHA-256 of every float parameter's values, in module order: the identity of a model's weights.
/// (The serialised record also holds random parameter ids, so its bytes differ between two
/// trainings that learned exactly the same numbers.)
pub fn weights_digest<M: Module>(m: &M) -> String {
    struct Hash(sha2::Sha256);
    impl burn::module::ModuleVisitor for Hash {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            use sha2::Digest;
            let t = param.val();
            self.0.update(format!("{:?}", t.dims()).as_bytes());
            for v in t.try_into_vec_as::<f32>().unwrap_or_default() {
                self.0.update(v.to_le_bytes());
            }
        }
    }
    let mut h = Hash(<sha2::Sha256 as sha2::Digest>::new());
    m.visit(&mut h);
    sha2::Digest::finalize(h.0).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_bytes<M: Module>(empty: M, bytes: &[u8]) -> Result<M, String> {
    let rec = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| format!("cannot read model weights: {e:?}"))?;
    empty.try_load_record(rec).map_err(|e| format!("model weights do not fit the model: {e:?}"))
}

/// splitmix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Training hyperparameters shared by both models.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Stop after this many epochs without a better validation loss (0 = never).
    pub patience: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub samples_per_s: f64,
    pub seconds: f64,
}

/// Saved after every epoch; a retry of the same task instance resumes from it.
#[derive(Serialize, Deserialize)]
struct CheckpointState {
    epoch: usize,
    best_epoch: usize,
    best_val: f64,
    history: Vec<EpochReport>,
    config: FitConfig,
    /// The config as JSON text: floats do not always survive a parse exactly, text compares exactly.
    #[serde(default)]
    config_key: String,
}

/// A file holding a JSON header and named binary blobs, used for model artifacts and checkpoints:
/// `MLBOX1\n`, u64 LE header length, header JSON (with `blobs: [[name, len], ...]`), the blobs.
pub fn pack(mut header: Value, blobs: &[(&str, &[u8])]) -> Vec<u8> {
    header["blobs"] = Value::Array(blobs.iter().map(|(n, b)| serde_json::json!([n, b.len()])).collect());
    let h = header.to_string().into_bytes();
    let mut out = Vec::with_capacity(16 + h.len() + blobs.iter().map(|b| b.1.len()).sum::<usize>());
    out.extend_from_slice(b"MLBOX1\n");
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for (_, b) in blobs {
        out.extend_from_slice(b);
    }
    out
}

/// Named binary parts of a packed file.
pub type Blobs = Vec<(String, Vec<u8>)>;

/// Inverse of [`pack`]: the header and the blobs by name.
pub fn unpack(bytes: &[u8]) -> Result<(Value, Blobs), String> {
    let bad = || "not an mlbox model file (bad header)".to_string();
    if bytes.len() < 15 || &bytes[..7] != b"MLBOX1\n" {
        return Err(bad());
    }
    let n = u64::from_le_bytes(bytes[7..15].try_into().map_err(|_| bad())?) as usize;
    let h = bytes.get(15..15 + n).ok_or_else(bad)?;
    let header: Value = serde_json::from_slice(h).map_err(|_| bad())?;
    let mut at = 15 + n;
    let mut blobs = Vec::new();
    for b in header["blobs"].as_array().ok_or_else(bad)? {
        let name = b[0].as_str().ok_or_else(bad)?.to_string();
        let len = b[1].as_u64().ok_or_else(bad)? as usize;
        blobs.push((name, bytes.get(at..at + len).ok_or_else(bad)?.to_vec()));
        at += len;
    }
    Ok((header, blobs))
}

pub fn blob<'a>(blobs: &'a Blobs, name: &str) -> Result<&'a [u8], String> {
    blobs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b.as_slice())
        .ok_or_else(|| format!("model file has no `{name}`"))
}

/// Where a task instance keeps its checkpoint between tries.
pub fn checkpoint_path(data_dir: &Path, run_id: i64, task_id: &str, map_index: i64) -> PathBuf {
    data_dir.join("checkpoints").join(format!("run-{run_id}")).join(format!("{task_id}.{map_index}.ckpt"))
}

/// What the op hands a trainer: where to checkpoint, and what to do at each epoch.
pub struct Hooks<'a> {
    pub checkpoint: PathBuf,
    pub on_epoch: &'a mut dyn FnMut(&EpochReport),
    pub on_resume: &'a mut dyn FnMut(usize),
    pub stopped: &'a dyn Fn() -> Option<String>,
}

/// What the epoch loop needs from a model family.
pub struct Fit<'a, M> {
    pub config: &'a FitConfig,
    pub train_rows: usize,
    pub checkpoint: PathBuf,
    /// Fresh, uninitialised model on a device (for loading weights).
    pub make: &'a dyn Fn(&Device) -> M,
    /// Mean loss of one training batch (rows by index) on the autodiff device, with a dropout RNG.
    pub batch_loss: &'a dyn Fn(&M, &[usize], &mut Rng) -> Tensor<1>,
    /// Validation loss of the model (already `valid()`).
    pub val_loss: &'a dyn Fn(&M) -> f64,
    pub on_epoch: &'a mut dyn FnMut(&EpochReport),
    pub on_resume: &'a mut dyn FnMut(usize),
    /// Some(reason) when the task must stop (timeout, cancel, shutdown).
    pub stopped: &'a dyn Fn() -> Option<String>,
}

pub struct Fitted<M> {
    pub model: M,
    pub history: Vec<EpochReport>,
    pub best_epoch: usize,
    pub resumed_from: Option<usize>,
}

fn adam() -> ModuleOptimizer {
    AdamConfig::new().with_epsilon(1e-8).init()
}

/// The epoch loop: seeded batches, Adam, a validation pass, a checkpoint and a report per epoch,
/// early stopping, and the best model by validation loss at the end.
pub fn fit<M: Module>(f: Fit<'_, M>) -> Result<Fitted<M>, String> {
    let cfg = f.config;
    let train_dev = device().autodiff();
    let mut model = init_seeded(cfg.seed, &train_dev, f.make);
    let mut optim = adam();
    let config_key = serde_json::to_string(cfg).map_err(|e| e.to_string())?;
    let mut state = CheckpointState {
        epoch: 0,
        best_epoch: 0,
        best_val: f64::INFINITY,
        history: vec![],
        config: cfg.clone(),
        config_key: config_key.clone(),
    };
    let mut best = to_bytes(&model)?;
    let mut resumed_from = None;
    if let Ok(bytes) = std::fs::read(&f.checkpoint) {
        // A checkpoint that cannot be used (other params, an old format, a torn file) is dropped:
        // training starts over rather than failing every retry.
        match restore(&bytes, &config_key, f.make, &train_dev) {
            Ok((saved, m, o, b)) => {
                (model, optim, best) = (m, o, b);
                resumed_from = Some(saved.epoch);
                (f.on_resume)(saved.epoch);
                state = saved;
            }
            Err(why) => {
                tracing::warn!(checkpoint = %f.checkpoint.display(), %why, "ignoring an unusable checkpoint");
                let _ = std::fs::remove_file(&f.checkpoint);
            }
        }
    }
    let bs = cfg.batch_size.max(1);
    while state.epoch < cfg.epochs {
        if cfg.patience > 0 && state.epoch - state.best_epoch >= cfg.patience && state.best_epoch > 0 {
            break;
        }
        let epoch = state.epoch + 1;
        let started = Instant::now();
        let mut rng = Rng::new(cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        let mut order: Vec<usize> = (0..f.train_rows).collect();
        rng.shuffle(&mut order);
        let (mut sum, mut batches) = (0.0, 0usize);
        for chunk in order.chunks(bs) {
            if let Some(why) = (f.stopped)() {
                return Err(format!("training stopped in epoch {epoch}: {why}"));
            }
            let loss = (f.batch_loss)(&model, chunk, &mut rng);
            sum += f64::from(loss.clone().into_scalar::<f32>());
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.learning_rate, model, grads);
        }
        let seconds = started.elapsed().as_secs_f64();
        let val = (f.val_loss)(&model.valid());
        let report = EpochReport {
            epoch,
            train_loss: sum / batches.max(1) as f64,
            val_loss: val,
            samples_per_s: f.train_rows as f64 / seconds.max(1e-9),
            seconds,
        };
        if !report.train_loss.is_finite() {
            return Err(format!(
                "training diverged in epoch {epoch} (loss is {}); try a smaller learning_rate",
                report.train_loss
            ));
        }
        let weights = to_bytes(&model)?;
        if val < state.best_val || !state.best_val.is_finite() {
            state.best_val = val;
            state.best_epoch = epoch;
            best = weights.clone();
        }
        state.epoch = epoch;
        state.history.push(report.clone());
        (f.on_epoch)(&report);
        save_checkpoint(&f.checkpoint, &state, &weights, &optim, &best)?;
    }
    let model = from_bytes((f.make)(&device()), &best)?;
    Ok(Fitted { model, history: state.history, best_epoch: state.best_epoch, resumed_from })
}

type Restored<M> = (CheckpointState, M, ModuleOptimizer, Vec<u8>);

fn restore<M: Module>(
    bytes: &[u8],
    config_key: &str,
    make: &dyn Fn(&Device) -> M,
    device: &Device,
) -> Result<Restored<M>, String> {
    let (header, blobs) = unpack(bytes)?;
    let saved: CheckpointState = serde_json::from_value(header).map_err(|e| format!("bad checkpoint: {e}"))?;
    if saved.config_key != config_key {
        return Err("it was written with other training params".into());
    }
    let model = from_bytes(make(device), blob(&blobs, "model")?)?;
    let optim = adam()
        .from_bytes(Bytes::from_bytes_vec(blob(&blobs, "optim")?.to_vec()))
        .map_err(|e| format!("bad optimizer checkpoint: {e:?}"))?;
    let best = blob(&blobs, "best")?.to_vec();
    Ok((saved, model, optim, best))
}

fn save_checkpoint(
    path: &Path,
    state: &CheckpointState,
    m: &[u8],
    optim: &ModuleOptimizer,
    best: &[u8],
) -> Result<(), String> {
    let header = serde_json::to_value(state).map_err(|e| e.to_string())?;
    let o = optim.into_bytes().map_err(|e| format!("cannot serialise the optimizer: {e:?}"))?.to_vec();
    let bytes = pack(header, &[("model", m), ("optim", &o), ("best", best)]);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write checkpoint: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write checkpoint: {e}"))
}

/// Row-gather helpers for building batch tensors.
pub fn gather_f32(src: &[f32], width: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &r in rows {
        out.extend_from_slice(&src[r * width..(r + 1) * width]);
    }
    out
}

pub fn gather_i64(src: &[i64], width: usize, rows: &[usize]) -> Vec<i64> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &r in rows {
        out.extend_from_slice(&src[r * width..(r + 1) * width]);
    }
    out
}

pub fn floats<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

pub fn ints<const D: usize>(v: Vec<i64>, shape: [usize; D], device: &Device) -> Tensor<D, Int> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_rejects_garbage() {
        let bytes = pack(serde_json::json!({"kind": "x"}), &[("a", b"hello"), ("b", b"")]);
        let (h, blobs) = unpack(&bytes).unwrap();
        assert_eq!(h["kind"], "x");
        assert_eq!(blob(&blobs, "a").unwrap(), b"hello");
        assert_eq!(blob(&blobs, "b").unwrap(), b"");
        assert!(unpack(b"not a model").is_err());
        assert!(unpack(&bytes[..bytes.len() - 2]).is_err(), "a truncated file is refused");
    }

    #[test]
    fn seeded_initialisation_repeats() {
        let make = |d: &Device| models::Forecaster::new(2, 8, 1, 3, d);
        let dev = device();
        let a = weights_digest(&init_seeded(5, &dev, make));
        assert_eq!(a, weights_digest(&init_seeded(5, &dev, make)));
        assert_ne!(a, weights_digest(&init_seeded(6, &dev, make)));
    }

    #[test]
    fn seeded_shuffles_repeat() {
        let (mut a, mut b) = ((0..100).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
        Rng::new(3).shuffle(&mut a);
        Rng::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
    }
}

/// What a `train` task outputs to point at its model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelRef {
    pub sha256: String,
    pub kind: String,
    #[serde(default)]
    pub experiment: Option<i64>,
}

/// A trained model of either family, loaded from the content store.
pub enum Loaded {
    Lstm(Box<forecast::LstmModel>),
    WideDeep(Box<wide_deep::WideDeepModel>),
}

pub fn load(data_dir: &Path, r: &ModelRef) -> Result<(Value, Loaded), String> {
    if !crate::artifacts::is_sha256(&r.sha256) {
        return Err(format!("`{}` is not a model reference (sha256 must be 64 hex digits)", r.sha256));
    }
    let path = crate::artifacts::path_of(data_dir, &r.sha256);
    let bytes = std::fs::read(&path).map_err(|e| format!("model {} is missing from the store ({e})", r.sha256))?;
    load_bytes(&bytes)
}

/// A model from the bytes of its file.
pub fn load_bytes(bytes: &[u8]) -> Result<(Value, Loaded), String> {
    let (header, blobs) = unpack(bytes)?;
    let weights = blob(&blobs, "weights")?;
    let loaded = match header["kind"].as_str() {
        Some("lstm") => Loaded::Lstm(Box::new(forecast::LstmModel::load(&header, weights)?)),
        Some("wide_deep") => Loaded::WideDeep(Box::new(wide_deep::WideDeepModel::load(&header, weights)?)),
        other => return Err(format!("unknown model kind {other:?}")),
    };
    Ok((header, loaded))
}
