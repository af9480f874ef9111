//! A fused LSTM layer for Burn: the whole sequence is one backend operation with a hand-written
//! backward pass (backpropagation through time), the way PyTorch's CPU path (oneDNN) runs it.
//!
//! Burn's `nn::Lstm` runs eight small matmuls, eight bias adds and a `slice_assign` of the output
//! per time step, each an autodiff node; at window 50 that graph, not arithmetic, is where
//! training time went (0.30× PyTorch). Here one step is one matmul of `h[t-1]` by the four gates'
//! weights `[H, 4H]` plus fused element-wise gate arithmetic, and the backward pass walks the
//! steps in reverse with four matmuls a step. Rows of the batch are independent through time, so
//! the batch is cut into fixed chunks that run in parallel; their weight gradients are summed in
//! chunk order, so results do not depend on the number of threads.
//!
//! The parameters stay those of `nn::Lstm` (see `Forecaster`): saved models keep their format.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// Rows of the batch one thread runs through all steps: half the batch (two chunks keep two
/// cores busy with the largest matmuls), at least `MIN_CHUNK`, at most `MAX_CHUNK`. It depends on
/// the batch size only, so results never depend on the machine's thread count.
const MIN_CHUNK: usize = 64;
const MAX_CHUNK: usize = 256;

fn chunk_rows(b: usize) -> usize {
    b.div_ceil(2).clamp(MIN_CHUNK, MAX_CHUNK)
}

/// Inputs this narrow are projected in the element-wise loop rather than by a matmul per step.
const NARROW: usize = 4;

#[cfg(feature = "ndarray")]
use burn::backend::NdArray;

/// The fused LSTM operation, implemented for the CPU backends and for Burn's autodiff.
#[backend_extension(Flex, NdArray: cfg(feature = "ndarray"), Autodiff)]
pub trait LstmBackend: Backend {
    /// `x` [B, T, I], `w_ih` [I, 4H], `w_hh` [H, 4H], `bias` [4H] (gate order input, forget,
    /// cell, output) → hidden states [B, T, H], starting from zero state.
    fn lstm_sequence(
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let device = x.device();
        let (w, x, [b, t, _]) = weights::<Self>(x, w_ih, w_hh, bias);
        let (out, _) = forward(&w, &x, b, t, false);
        Self::float_from_data(TensorData::new(out, [b, t, w.h]), &device)
    }

    /// The same LSTM, returning only the last step's hidden state [B, H]: what a forecaster's
    /// head reads. Saves the [B, T, H] output tensor, its slice, and the slice's gradient.
    fn lstm_last(
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let device = x.device();
        let (w, x, [b, t, _]) = weights::<Self>(x, w_ih, w_hh, bias);
        let (out, _) = forward(&w, &x, b, t, false);
        Self::float_from_data(TensorData::new(last_step(&out, b, t, w.h), [b, w.h]), &device)
    }
}

impl LstmBackend for Flex {}
#[cfg(feature = "ndarray")]
impl LstmBackend for NdArray {}

/// The LSTM over a batch: `x` [B, T, I] → the last step's hidden state [B, H].
pub fn lstm_last(x: Tensor<3>, w_ih: Tensor<2>, w_hh: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    let out = <Dispatch as LstmBackend>::lstm_last(
        x.into_dispatch(),
        w_ih.into_dispatch(),
        w_hh.into_dispatch(),
        bias.into_dispatch(),
    );
    Tensor::from_dispatch(out)
}

/// The LSTM over a batch: `x` [B, T, I] → hidden states [B, T, H]. See [`LstmBackend`].
pub fn lstm_sequence(x: Tensor<3>, w_ih: Tensor<2>, w_hh: Tensor<2>, bias: Tensor<1>) -> Tensor<3> {
    let out = <Dispatch as LstmBackend>::lstm_sequence(
        x.into_dispatch(),
        w_ih.into_dispatch(),
        w_hh.into_dispatch(),
        bias.into_dispatch(),
    );
    Tensor::from_dispatch(out)
}

/// The last step of hidden states [B, T, H] → [B, H].
fn last_step(out: &[f32], b: usize, t: usize, h: usize) -> Vec<f32> {
    if t == 0 {
        return vec![0.0; b * h];
    }
    (0..b).flat_map(|r| out[(r * t + t - 1) * h..(r * t + t) * h].iter().copied()).collect()
}

/// The op's inputs as host vectors: the weights, `x` and its shape [B, T, I].
fn weights<B: Backend>(
    x: FloatTensor<B>,
    w_ih: FloatTensor<B>,
    w_hh: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> (Weights, Vec<f32>, [usize; 3]) {
    let (x, shape) = read::<B, 3>(x);
    let (w_ih, [_, g]) = read::<B, 2>(w_ih);
    let (w_hh, _) = read::<B, 2>(w_hh);
    let (bias, _) = read::<B, 1>(bias);
    (Weights { i: shape[2], h: g / 4, w_ih, w_hh, bias }, x, shape)
}

fn read<B: Backend, const D: usize>(t: FloatTensor<B>) -> (Vec<f32>, [usize; D]) {
    let data = burn::tensor::try_read_sync(B::float_into_data(t))
        .expect("a CPU tensor reads synchronously")
        .expect("reading a CPU tensor cannot fail");
    let shape: [usize; D] = data.shape().as_slice().try_into().expect("tensor rank checked by the caller");
    let data = data.convert::<f32>();
    (data.try_into_vec::<f32>().expect("converted to f32"), shape)
}

fn write<B: Backend>(v: Vec<f32>, shape: &[usize], device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(v, shape.to_vec()), device)
}

#[derive(Debug)]
struct Weights {
    i: usize,
    h: usize,
    /// [I, 4H], row-major.
    w_ih: Vec<f32>,
    /// [H, 4H], row-major.
    w_hh: Vec<f32>,
    /// [4H].
    bias: Vec<f32>,
}

/// What the backward pass needs: the inputs, and per chunk the activated gates and cell states.
#[derive(Debug)]
struct Saved {
    w: Weights,
    x: Vec<f32>,
    out: Vec<f32>,
    b: usize,
    t: usize,
    /// Rows per chunk (`chunk_rows(b)`).
    chunk: usize,
    chunks: Vec<ChunkSaved>,
    /// The op returned the last step only: its gradient is [B, H], zero for earlier steps.
    last_only: bool,
}

#[derive(Debug, Default)]
struct ChunkSaved {
    /// [T, Bc, 4H]: i, f, g, o after their activations.
    gates: Vec<f32>,
    /// [T, Bc, H]: the cell state and its tanh.
    c: Vec<f32>,
    tc: Vec<f32>,
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, each matrix given by its slice and (row, column) strides.
/// Bounds are checked here, so the unsafe call below only ever touches memory inside the slices.
#[allow(clippy::too_many_arguments)]
fn mm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (drs, dcs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lrs, lcs): (usize, usize),
    rhs: &[f32],
    (rrs, rcs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * drs + (n - 1) * dcs < dst.len(), "mm: dst out of bounds");
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|r| (0..n).for_each(|c| dst[r * drs + c * dcs] = 0.0));
        }
        return;
    }
    assert!((m - 1) * lrs + (k - 1) * lcs < lhs.len(), "mm: lhs out of bounds");
    assert!((k - 1) * rrs + (n - 1) * rcs < rhs.len(), "mm: rhs out of bounds");
    // SAFETY: every index the product reads or writes is < the slice lengths asserted above, and
    // `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dcs as isize,
            drs as isize,
            accumulate,
            lhs.as_ptr(),
            lcs as isize,
            lrs as isize,
            rhs.as_ptr(),
            rcs as isize,
            rrs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// exp(x) for f32 in straight-line code the compiler vectorises (Cephes' expf: range reduction by
/// ln 2 and a degree-5 polynomial; error about 1 ulp). `f32::exp` is a libm call per element and
/// dominated the step time.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Past ±88 the result leaves f32's normal range (and 2^128 is not a finite f32).
    let x = x.clamp(-87.3, 88.0);
    // Round to nearest by adding and removing 1.5·2^23: plain arithmetic, so the loop stays
    // vectorised on baseline x86-64 (`f32::round` needs SSE4.1 or a libm call).
    const MAGIC: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 5e-1;
    let y = p * r * r + r + 1.0;
    // 2^n from the bits: `shifted` and MAGIC share an exponent, so their bit patterns differ by
    // exactly n. (An `as i32` cast saturates, which the compiler cannot vectorise: it became
    // one scalar conversion per element and most of the step time.)
    y * f32::from_bits(shifted.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    // 1 - 2/(e^{2x}+1): exact limits ±1, absolute error ~1e-7 near 0.
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// Runs all steps; returns the hidden states [B, T, H] and, with `save`, what backward needs.
fn forward(w: &Weights, x: &[f32], b: usize, t: usize, save: bool) -> (Vec<f32>, Vec<ChunkSaved>) {
    let (i, h) = (w.i, w.h);
    let mut out = vec![0.0; b * t * h];
    if b == 0 || t == 0 {
        return (out, Vec::new());
    }
    let chunk = chunk_rows(b);
    let parts: Vec<&mut [f32]> = out.chunks_mut(chunk * t * h).collect();
    let saved = parts
        .into_par_iter()
        .enumerate()
        .map(|(c, out)| {
            let r0 = c * chunk;
            let bc = out.len() / (t * h);
            forward_chunk(w, &x[r0 * t * i..(r0 + bc) * t * i], out, bc, t, save)
        })
        .collect();
    (out, saved)
}

/// The vector instructions the element-wise loops are compiled for, chosen once per process.
/// Each level runs the same arithmetic in the same order (no fused multiply-adds are formed), so
/// these loops give the same bits on every CPU; wider vectors only do more elements at once. (The
/// matmuls are `gemm`'s, whose AVX-512 and AVX2 kernels sum in different orders: see TRAINING.md.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The widest level this CPU has, or a narrower one named by `MLBOX_SIMD` (`base`, `avx2`,
/// `avx512`; for comparing them: results are the same bits at every level).
fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let asked = std::env::var("MLBOX_SIMD").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            match asked.as_str() {
                "base" => return Simd::Base,
                "avx2" if avx2 => return Simd::Avx2,
                "avx512" | "" if avx512 => return Simd::Avx512,
                _ if avx2 => return Simd::Avx2,
                _ => {}
            }
        }
        let _ = asked;
        Simd::Base
    })
}

/// `forward_chunk_body` compiled for the best vector width this CPU has.
fn forward_chunk(w: &Weights, x: &[f32], out: &mut [f32], bc: usize, t: usize, save: bool) -> ChunkSaved {
    match simd() {
        // SAFETY: `simd()` found the features these functions are compiled for on this CPU.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { forward_chunk_avx512(w, x, out, bc, t, save) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { forward_chunk_avx2(w, x, out, bc, t, save) },
        Simd::Base => forward_chunk_body(w, x, out, bc, t, save),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn forward_chunk_avx512(w: &Weights, x: &[f32], out: &mut [f32], bc: usize, t: usize, save: bool) -> ChunkSaved {
    forward_chunk_body(w, x, out, bc, t, save)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn forward_chunk_avx2(w: &Weights, x: &[f32], out: &mut [f32], bc: usize, t: usize, save: bool) -> ChunkSaved {
    forward_chunk_body(w, x, out, bc, t, save)
}

#[inline(always)]
fn forward_chunk_body(w: &Weights, x: &[f32], out: &mut [f32], bc: usize, t: usize, save: bool) -> ChunkSaved {
    let (i, h) = (w.i, w.h);
    let g = 4 * h;
    let steps = if save { t } else { 1 };
    let mut gates = vec![0.0; steps * bc * g];
    let mut c = vec![0.0; if save { t } else { 2 } * bc * h];
    let mut tc = vec![0.0; steps * bc * h];
    let zeros = vec![0.0; bc * h];
    for s in 0..t {
        let gs = if save { s } else { 0 };
        let gt = &mut gates[gs * bc * g..(gs + 1) * bc * g];
        // bias + x_t · W_ih (x is [Bc, T, I]: step s's rows are T·I apart).
        for (r, row) in gt.chunks_mut(g).enumerate() {
            row.copy_from_slice(&w.bias);
            if i <= NARROW {
                for (k, &xv) in x[r * t * i + s * i..r * t * i + (s + 1) * i].iter().enumerate() {
                    row.iter_mut().zip(&w.w_ih[k * g..(k + 1) * g]).for_each(|(a, &wv)| *a += xv * wv);
                }
            }
        }
        if i > NARROW {
            mm((bc, g, i), gt, (g, 1), true, &x[s * i..], (t * i, 1), &w.w_ih, (g, 1));
        }
        if s > 0 {
            // h_{t-1} · W_hh, read from the output written at the previous step.
            mm((bc, g, h), gt, (g, 1), true, &out[(s - 1) * h..], (t * h, 1), &w.w_hh, (g, 1));
        }
        // The previous and the new cell state, [Bc, H] each.
        let (c_prev, c_new): (&[f32], &mut [f32]) = if save {
            let (before, from) = c.split_at_mut(s * bc * h);
            (if s == 0 { &zeros } else { &before[(s - 1) * bc * h..] }, &mut from[..bc * h])
        } else {
            let (a, b) = c.split_at_mut(bc * h);
            if s % 2 == 0 { (b, a) } else { (a, b) }
        };
        let tco = if save { s * bc * h } else { 0 };
        for r in 0..bc {
            let row = &mut gt[r * g..(r + 1) * g];
            let (ig, rest) = row.split_at_mut(h);
            let (fg, rest) = rest.split_at_mut(h);
            let (cg, og) = rest.split_at_mut(h);
            let og = &mut og[..h];
            let prev = &c_prev[r * h..(r + 1) * h];
            let cur = &mut c_new[r * h..(r + 1) * h];
            let hrow = &mut out[r * t * h + s * h..r * t * h + (s + 1) * h];
            let trow = &mut tc[tco + r * h..tco + (r + 1) * h];
            gate_row([ig, fg, cg, og], prev, cur, trow, hrow);
        }
    }
    if save { ChunkSaved { gates, c, tc } } else { ChunkSaved::default() }
}

/// Elements the element-wise loops take at a time: 16 f32 fill one AVX-512 register, two AVX2 and
/// four SSE registers.
const LANES: usize = 16;

/// The blocks a row of `h` elements is taken in: `LANES` at a time (flagged `true`), then one at a
/// time for the rest. Both widths run the same arithmetic per element, so the same bits.
#[inline(always)]
fn lanes(h: usize) -> impl Iterator<Item = (std::ops::Range<usize>, bool)> {
    let full = h / LANES * LANES;
    (0..full).step_by(LANES).map(|j| (j..j + LANES, true)).chain((full..h).map(|j| (j..j + 1, false)))
}

/// One row's gate activations and new state.
#[inline(always)]
fn gate_row(gates: [&mut [f32]; 4], prev: &[f32], cur: &mut [f32], trow: &mut [f32], hrow: &mut [f32]) {
    let [ig, fg, cg, og] = gates;
    for (k, full) in lanes(ig.len()) {
        let args = ([&mut ig[k.clone()], &mut fg[k.clone()], &mut cg[k.clone()], &mut og[k.clone()]], &prev[k.clone()]);
        let outs = [&mut cur[k.clone()], &mut trow[k.clone()], &mut hrow[k]];
        if full { gate_lanes::<LANES>(args, outs) } else { gate_lanes::<1>(args, outs) }
    }
}

/// The gate arithmetic on `N` elements. It reads every input into local arrays before it writes:
/// the compiler cannot know that the row's slices do not overlap, and with loads and stores
/// interleaved it left this loop scalar, one element per instruction.
#[inline(always)]
fn gate_lanes<const N: usize>((gates, prev): ([&mut [f32]; 4], &[f32]), [cur, trow, hrow]: [&mut [f32]; 3]) {
    let [ig, fg, cg, og] = gates;
    let (i0, f0, g0, o0, p0) = (load::<N>(ig), load::<N>(fg), load::<N>(cg), load::<N>(og), load::<N>(prev));
    let (mut iv, mut fv, mut gv, mut ov, mut cv, mut tv, mut hv) =
        ([0.0; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N]);
    for k in 0..N {
        iv[k] = sigmoid(i0[k]);
        fv[k] = sigmoid(f0[k]);
        gv[k] = tanh(g0[k]);
        ov[k] = sigmoid(o0[k]);
        cv[k] = fv[k] * p0[k] + iv[k] * gv[k];
        tv[k] = tanh(cv[k]);
        hv[k] = ov[k] * tv[k];
    }
    for (dst, src) in [(ig, iv), (fg, fv), (cg, gv), (og, ov), (cur, cv), (trow, tv), (hrow, hv)] {
        dst[..N].copy_from_slice(&src);
    }
}

struct Grads {
    dx: Option<Vec<f32>>,
    dw_ih: Vec<f32>,
    dw_hh: Vec<f32>,
    dbias: Vec<f32>,
}

fn backward(s: &Saved, dout: &[f32], want_dx: bool) -> Grads {
    let (b, t, i, h) = (s.b, s.t, s.w.i, s.w.h);
    let g = 4 * h;
    let mut dx = vec![0.0; if want_dx { b * t * i } else { 0 }];
    let parts: Vec<Option<&mut [f32]>> = if want_dx {
        dx.chunks_mut(s.chunk * t * i).map(Some).collect()
    } else {
        (0..s.chunks.len()).map(|_| None).collect()
    };
    let partial: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = parts
        .into_par_iter()
        .enumerate()
        .map(|(c, dx)| {
            let r0 = c * s.chunk;
            let bc = (b - r0).min(s.chunk);
            let rows = |width: usize| (r0 * t * width, (r0 + bc) * t * width);
            let ((xa, xb), (oa, ob)) = (rows(i), rows(h));
            let dout = if s.last_only { &dout[r0 * h..(r0 + bc) * h] } else { &dout[oa..ob] };
            backward_chunk(s, &s.chunks[c], &s.x[xa..xb], &s.out[oa..ob], dout, dx, bc)
        })
        .collect();
    let mut dw_ih = vec![0.0; i * g];
    let mut dw_hh = vec![0.0; h * g];
    let mut dbias = vec![0.0; g];
    for (a, b2, c) in partial {
        dw_ih.iter_mut().zip(a).for_each(|(d, v)| *d += v);
        dw_hh.iter_mut().zip(b2).for_each(|(d, v)| *d += v);
        dbias.iter_mut().zip(c).for_each(|(d, v)| *d += v);
    }
    Grads { dx: want_dx.then_some(dx), dw_ih, dw_hh, dbias }
}

/// `backward_chunk_body` compiled for the best vector width this CPU has (see [`simd`]).
fn backward_chunk(
    s: &Saved,
    cs: &ChunkSaved,
    x: &[f32],
    out: &[f32],
    dout: &[f32],
    dx: Option<&mut [f32]>,
    bc: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    match simd() {
        // SAFETY: `simd()` found the features these functions are compiled for on this CPU.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { backward_chunk_avx512(s, cs, x, out, dout, dx, bc) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { backward_chunk_avx2(s, cs, x, out, dout, dx, bc) },
        Simd::Base => backward_chunk_body(s, cs, x, out, dout, dx, bc),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn backward_chunk_avx512(
    s: &Saved,
    cs: &ChunkSaved,
    x: &[f32],
    out: &[f32],
    dout: &[f32],
    dx: Option<&mut [f32]>,
    bc: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    backward_chunk_body(s, cs, x, out, dout, dx, bc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn backward_chunk_avx2(
    s: &Saved,
    cs: &ChunkSaved,
    x: &[f32],
    out: &[f32],
    dout: &[f32],
    dx: Option<&mut [f32]>,
    bc: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    backward_chunk_body(s, cs, x, out, dout, dx, bc)
}

/// Backpropagation through time for one chunk of rows. `x`, `out`, `dout` and `dx` are the
/// chunk's rows, batch-major ([Bc, T, ·]; `dout` is [Bc, H] when only the last step was returned).
#[inline(always)]
fn backward_chunk_body(
    s: &Saved,
    cs: &ChunkSaved,
    x: &[f32],
    out: &[f32],
    dout: &[f32],
    mut dx: Option<&mut [f32]>,
    bc: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, i, h) = (s.t, s.w.i, s.w.h);
    let g = 4 * h;
    let mut dw_ih = vec![0.0; i * g];
    let mut dw_hh = vec![0.0; h * g];
    let mut dbias = vec![0.0; g];
    let mut dg = vec![0.0; bc * g];
    let mut dh_next = vec![0.0; bc * h];
    let mut dc_next = vec![0.0; bc * h];
    let zeros = vec![0.0; bc * h];
    for st in (0..t).rev() {
        let gates = &cs.gates[st * bc * g..(st + 1) * bc * g];
        let tcs = &cs.tc[st * bc * h..(st + 1) * bc * h];
        let c_prev = if st == 0 { &zeros[..] } else { &cs.c[(st - 1) * bc * h..st * bc * h] };
        for r in 0..bc {
            let gr = &gates[r * g..(r + 1) * g];
            let (ig, fg, cg, og) = (&gr[..h], &gr[h..2 * h], &gr[2 * h..3 * h], &gr[3 * h..4 * h]);
            let dgr = &mut dg[r * g..(r + 1) * g];
            let (di, rest) = dgr.split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dgg, dout_gate) = rest.split_at_mut(h);
            let dout_gate = &mut dout_gate[..h];
            let dhr = match (s.last_only, st + 1 == t) {
                (false, _) => &dout[r * t * h + st * h..r * t * h + (st + 1) * h],
                (true, true) => &dout[r * h..(r + 1) * h],
                (true, false) => &zeros[..h],
            };
            let tv = &tcs[r * h..(r + 1) * h];
            let prev = &c_prev[r * h..(r + 1) * h];
            let dhn = &dh_next[r * h..(r + 1) * h];
            let dcn = &mut dc_next[r * h..(r + 1) * h];
            for (k, full) in lanes(h) {
                let ins = [&ig[k.clone()], &fg[k.clone()], &cg[k.clone()], &og[k.clone()], &tv[k.clone()]];
                let ins = (ins, [&prev[k.clone()], &dhr[k.clone()], &dhn[k.clone()]]);
                let outs = [
                    &mut di[k.clone()],
                    &mut df[k.clone()],
                    &mut dgg[k.clone()],
                    &mut dout_gate[k.clone()],
                    &mut dcn[k],
                ];
                if full { grad_lanes::<LANES>(ins, outs) } else { grad_lanes::<1>(ins, outs) }
            }
        }
        for (r, row) in dg.chunks(g).enumerate() {
            dbias.iter_mut().zip(row).for_each(|(d, v)| *d += v);
            if i <= NARROW {
                let xr = &x[r * t * i + st * i..r * t * i + (st + 1) * i];
                for (k, &xv) in xr.iter().enumerate() {
                    dw_ih[k * g..(k + 1) * g].iter_mut().zip(row).for_each(|(d, v)| *d += xv * v);
                }
                if let Some(dx) = dx.as_deref_mut() {
                    for k in 0..i {
                        let wr = &s.w.w_ih[k * g..(k + 1) * g];
                        dx[r * t * i + st * i + k] = row.iter().zip(wr).map(|(a, b)| a * b).sum();
                    }
                }
            }
        }
        if i > NARROW {
            // dW_ih += x_tᵀ · dG_t;  dx_t = dG_t · W_ihᵀ
            mm((i, g, bc), &mut dw_ih, (g, 1), true, &x[st * i..], (1, t * i), &dg, (g, 1));
            if let Some(dx) = dx.as_deref_mut() {
                mm((bc, i, g), &mut dx[st * i..], (t * i, 1), false, &dg, (g, 1), &s.w.w_ih, (1, g));
            }
        }
        if st > 0 {
            // dW_hh += h_{t-1}ᵀ · dG_t;  dh_{t-1} = dG_t · W_hhᵀ
            mm((h, g, bc), &mut dw_hh, (g, 1), true, &out[(st - 1) * h..], (1, t * h), &dg, (g, 1));
            mm((bc, h, g), &mut dh_next, (h, 1), false, &dg, (g, 1), &s.w.w_hh, (1, g));
        }
    }
    (dw_ih, dw_hh, dbias)
}

/// The first `N` elements of a slice, as a local array (see [`gate_lanes`]).
#[inline(always)]
fn load<const N: usize>(s: &[f32]) -> [f32; N] {
    s[..N].try_into().expect("the caller passes at least N elements")
}

/// One step back through the gates for `N` elements of a row, reading every input before it
/// writes (see [`gate_lanes`]). `dcn` holds the cell state's gradient from the step after and
/// leaves with the one for the step before.
#[inline(always)]
fn grad_lanes<const N: usize>(
    ([ig, fg, cg, og, tv], [prev, dhr, dhn]): ([&[f32]; 5], [&[f32]; 3]),
    [di, df, dgg, dog, dcn]: [&mut [f32]; 5],
) {
    let (iv, fv, gv, ov, t2) = (load::<N>(ig), load::<N>(fg), load::<N>(cg), load::<N>(og), load::<N>(tv));
    let (prev, dhr, dhn, dc_next) = (load::<N>(prev), load::<N>(dhr), load::<N>(dhn), load::<N>(dcn));
    let (mut d_i, mut d_f, mut d_g, mut d_o, mut dc_prev) = ([0.0; N], [0.0; N], [0.0; N], [0.0; N], [0.0; N]);
    for k in 0..N {
        let dh = dhr[k] + dhn[k];
        let dc = dh * ov[k] * (1.0 - t2[k] * t2[k]) + dc_next[k];
        dc_prev[k] = dc * fv[k];
        d_i[k] = dc * gv[k] * iv[k] * (1.0 - iv[k]);
        d_f[k] = dc * prev[k] * fv[k] * (1.0 - fv[k]);
        d_g[k] = dc * iv[k] * (1.0 - gv[k] * gv[k]);
        d_o[k] = dh * t2[k] * ov[k] * (1.0 - ov[k]);
    }
    for (dst, src) in [(di, d_i), (df, d_f), (dgg, d_g), (dog, d_o), (dcn, dc_prev)] {
        dst[..N].copy_from_slice(&src);
    }
}

#[derive(Debug)]
struct LstmBackward;

impl<B: Backend> Backward<B, 4> for LstmBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [nx, nih, nhh, nb] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let device = dout.device();
        let (dout, _) = if ops.state.last_only {
            let (d, [b, h]) = read::<B, 2>(dout);
            (d, [b, 1, h])
        } else {
            read::<B, 3>(dout)
        };
        let s = &ops.state;
        let gr = backward(s, &dout, nx.is_some());
        let (i, h) = (s.w.i, s.w.h);
        if let (Some(n), Some(dx)) = (nx, gr.dx) {
            grads.register::<B>(n.id, write::<B>(dx, &[s.b, s.t, i], &device));
        }
        if let Some(n) = nih {
            grads.register::<B>(n.id, write::<B>(gr.dw_ih, &[i, 4 * h], &device));
        }
        if let Some(n) = nhh {
            grads.register::<B>(n.id, write::<B>(gr.dw_hh, &[h, 4 * h], &device));
        }
        if let Some(n) = nb {
            grads.register::<B>(n.id, write::<B>(gr.dbias, &[4 * h], &device));
        }
    }
}

impl<B: LstmBackend, C: CheckpointStrategy> LstmBackend for Autodiff<B, C> {
    fn lstm_sequence(
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tracked::<B, C>(x, w_ih, w_hh, bias, false)
    }

    fn lstm_last(
        x: FloatTensor<Self>,
        w_ih: FloatTensor<Self>,
        w_hh: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tracked::<B, C>(x, w_ih, w_hh, bias, true)
    }
}

/// Forward under autodiff: keeps what the backward pass needs when gradients are tracked.
fn tracked<B: LstmBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    w_ih: FloatTensor<Autodiff<B, C>>,
    w_hh: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    last_only: bool,
) -> FloatTensor<Autodiff<B, C>> {
    let prep = LstmBackward.prepare::<C>([x.node(), w_ih.node(), w_hh.node(), bias.node()]).compute_bound();
    let device = x.primitive().device();
    let (x, w_ih, w_hh, bias) =
        (x.into_primitive(), w_ih.into_primitive(), w_hh.into_primitive(), bias.into_primitive());
    match prep.stateful() {
        OpsKind::Tracked(prep) => {
            let (w, xv, [b, t, _]) = weights::<B>(x, w_ih, w_hh, bias);
            let (out, chunks) = forward(&w, &xv, b, t, true);
            let h = w.h;
            let output = if last_only {
                write::<B>(last_step(&out, b, t, h), &[b, h], &device)
            } else {
                write::<B>(out.clone(), &[b, t, h], &device)
            };
            let saved = Saved { w, x: xv, out, b, t, chunk: chunk_rows(b), chunks, last_only };
            prep.finish(Arc::new(saved), output)
        }
        OpsKind::UnTracked(prep) if last_only => prep.finish(B::lstm_last(x, w_ih, w_hh, bias)),
        OpsKind::UnTracked(prep) => prep.finish(B::lstm_sequence(x, w_ih, w_hh, bias)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{device, floats, to_vec};
    use burn::nn::LstmConfig;
    use burn::tensor::Distribution;

    fn close(a: &[f32], b: &[f32], tol: f32) -> Result<(), String> {
        if a.len() != b.len() {
            return Err(format!("lengths {} and {}", a.len(), b.len()));
        }
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            if (x - y).abs() > tol * (1.0 + y.abs()) {
                return Err(format!("element {k}: {x} vs {y}"));
            }
        }
        Ok(())
    }

    #[test]
    fn fast_exp_and_tanh_match_std() {
        for k in -2000..=2000 {
            let x = k as f32 * 0.01;
            assert!((exp(x) - x.exp()).abs() <= 2e-7 * x.exp(), "exp({x})");
            assert!((tanh(x) - x.tanh()).abs() <= 3e-7, "tanh({x})");
            assert!((sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs() <= 2e-7, "sigmoid({x})");
        }
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        // exp is clamped at 88 (e^88 is the largest safe f32 power), so far-out inputs saturate.
        assert!(sigmoid(-200.0) < 1e-37 && sigmoid(-200.0) >= 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
        assert!(exp(1000.0).is_finite());
    }

    /// Burn's `nn::Lstm` is the reference: the fused op must compute the same hidden states and,
    /// through autodiff, the same gradients for the input and every weight and bias.
    /// `last`: compare the op that returns the last step only with that step of `nn::Lstm`.
    fn matches_burn_lstm(b: usize, t: usize, i: usize, h: usize, last: bool) {
        let dev = device().autodiff();
        dev.seed(7);
        let lstm = LstmConfig::new(i, h, true).init(&dev);
        let x = Tensor::<3>::random([b, t, i], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let steps = if last { 1 } else { t };
        let weight_of = |dout: Tensor<3>| (dout * Tensor::random([b, steps, h], Distribution::Default, &dev)).sum();

        let (reference, _) = lstm.forward(x.clone(), None);
        let (reference, fused) = if last {
            let fused = crate::train::models::fused_lstm_last(&lstm, x.clone()).reshape([b, 1, h]);
            (reference.slice(s![.., t - 1, ..]), fused)
        } else {
            (reference, crate::train::models::fused_lstm(&lstm, x.clone()))
        };
        close(&to_vec(fused.clone()), &to_vec(reference.clone()), 1e-5).unwrap();

        // The same random weighting of the outputs drives both backward passes.
        dev.seed(11);
        let g_ref = weight_of(reference).backward();
        dev.seed(11);
        let g_fused = weight_of(fused).backward();
        let grad = |g: &_, p: &Tensor<2>| to_vec(p.grad(g).expect("tracked"));
        close(&to_vec(x.grad(&g_fused).unwrap()), &to_vec(x.grad(&g_ref).unwrap()), 1e-4).unwrap();
        for gate in [&lstm.input_gate, lstm.forget_gate.as_ref().unwrap(), &lstm.cell_gate, &lstm.output_gate] {
            for lin in [&gate.input_transform, &gate.hidden_transform] {
                close(&grad(&g_fused, &lin.weight.val()), &grad(&g_ref, &lin.weight.val()), 1e-4).unwrap();
                let bias = lin.bias.as_ref().unwrap().val();
                close(&to_vec(bias.grad(&g_fused).unwrap()), &to_vec(bias.grad(&g_ref).unwrap()), 1e-4).unwrap();
            }
        }
    }

    /// Narrow inputs (projected in the element-wise loop) and wide ones (a matmul per step), a
    /// batch of three chunks with a short last one, and a batch smaller than one chunk.
    #[test]
    fn fused_lstm_matches_burn_lstm_values_and_gradients() {
        for last in [false, true] {
            matches_burn_lstm(2 * MAX_CHUNK + 7, 6, 3, 5, last);
            matches_burn_lstm(9, 4, NARROW + 3, 6, last);
        }
    }

    /// The element-wise loops compiled for wider vectors give the very same bits as the baseline.
    #[test]
    fn every_vector_width_gives_the_same_bits() {
        let wave = |n: usize, f: f32| (0..n).map(|k| (k as f32 * f).sin() * 0.8).collect::<Vec<f32>>();
        for (i, h, bc, t) in [(2, 40, 9, 5), (NARROW + 3, 37, 6, 4)] {
            let w = Weights { i, h, w_ih: wave(i * 4 * h, 0.37), w_hh: wave(h * 4 * h, 0.11), bias: wave(4 * h, 0.7) };
            let x = wave(bc * t * i, 1.3);
            let mut base = vec![0.0; bc * t * h];
            let sb = forward_chunk_body(&w, &x, &mut base, bc, t, true);
            let mut best = vec![0.0; bc * t * h];
            let sv = forward_chunk(&w, &x, &mut best, bc, t, true);
            assert_eq!(base, best, "{:?}", simd());
            assert_eq!((&sb.gates, &sb.c, &sb.tc), (&sv.gates, &sv.c, &sv.tc));
            let saved = Saved { w, x, out: base, b: bc, t, chunk: bc, chunks: vec![sb], last_only: false };
            let dout = wave(bc * t * h, 0.9);
            let (mut dx1, mut dx2) = (vec![0.0; bc * t * i], vec![0.0; bc * t * i]);
            let cs = &saved.chunks[0];
            let g1 = backward_chunk_body(&saved, cs, &saved.x, &saved.out, &dout, Some(&mut dx1), bc);
            let g2 = backward_chunk(&saved, cs, &saved.x, &saved.out, &dout, Some(&mut dx2), bc);
            assert_eq!((g1, dx1), (g2, dx2));
        }
    }

    #[test]
    fn fused_lstm_is_the_same_on_the_inference_backend() {
        let dev = device();
        dev.seed(3);
        let lstm = LstmConfig::new(2, 4, true).init(&dev);
        let x = floats((0..3 * 9 * 2).map(|k| (k as f32 * 0.37).sin()).collect(), [3, 9, 2], &dev);
        let (reference, _) = lstm.forward(x.clone(), None);
        let last = crate::train::models::fused_lstm_last(&lstm, x.clone());
        close(&to_vec(last), &to_vec(reference.clone().slice(s![.., 8, ..])), 1e-5).unwrap();
        close(&to_vec(crate::train::models::fused_lstm(&lstm, x)), &to_vec(reference), 1e-5).unwrap();
    }
}
