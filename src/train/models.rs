//! The two Burn networks: a multi-layer LSTM forecaster and a wide&deep regressor/classifier.
//!
//! The LSTM cell is written over whole-sequence matrices: the input projection of every timestep
//! is one matmul, and each step adds one hidden-state matmul and four gate activations, instead of
//! eight small linear layers per step.

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid, tanh};

/// One LSTM layer. Gates are laid out as [input, forget, output | candidate] along the last axis.
#[derive(Module, Debug)]
pub struct LstmLayer {
    ih: Linear,
    hh: Linear,
    hidden: usize,
}

impl LstmLayer {
    pub fn new(d_in: usize, hidden: usize, device: &Device) -> Self {
        LstmLayer {
            ih: LinearConfig::new(d_in, 4 * hidden).init(device),
            hh: LinearConfig::new(hidden, 4 * hidden).with_bias(false).init(device),
            hidden,
        }
    }

    /// [B, T, F] → the hidden state of every step [B, T, H] (or only the last, [B, 1, H]).
    pub fn forward(&self, x: Tensor<3>, all_steps: bool) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let h = self.hidden;
        let xp = self.ih.forward(x);
        let device = xp.device();
        let mut hs = Tensor::<2>::zeros([b, h], &device);
        let mut cs = Tensor::<2>::zeros([b, h], &device);
        let mut outs = Vec::with_capacity(if all_steps { t } else { 1 });
        for step in 0..t {
            let g = xp.clone().narrow(1, step, 1).reshape([b, 4 * h]) + self.hh.forward(hs);
            let ifo = sigmoid(g.clone().narrow(1, 0, 3 * h));
            let cand = tanh(g.narrow(1, 3 * h, h));
            let (i, f, o) = (ifo.clone().narrow(1, 0, h), ifo.clone().narrow(1, h, h), ifo.narrow(1, 2 * h, h));
            cs = f * cs + i * cand;
            hs = o * tanh(cs.clone());
            if all_steps {
                outs.push(hs.clone());
            }
        }
        if all_steps { Tensor::stack(outs, 1) } else { hs.unsqueeze_dim(1) }
    }
}

#[derive(Module, Debug)]
pub struct Forecaster {
    layers: Vec<LstmLayer>,
    head: Linear,
}

impl Forecaster {
    pub fn new(features: usize, hidden: usize, layers: usize, horizon: usize, device: &Device) -> Self {
        let layers = (0..layers.max(1))
            .map(|l| LstmLayer::new(if l == 0 { features } else { hidden }, hidden, device))
            .collect();
        Forecaster { layers, head: LinearConfig::new(hidden, horizon).init(device) }
    }

    /// [B, W, F] → [B, H]. `drop` multiplies the output of each layer (dropout masks, or None).
    pub fn forward(&self, x: Tensor<3>, drop: &mut dyn FnMut(Tensor<3>) -> Tensor<3>) -> Tensor<2> {
        let n = self.layers.len();
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            x = drop(layer.forward(x, i + 1 < n));
        }
        let [b, _, h] = x.dims();
        self.head.forward(x.reshape([b, h]))
    }
}

/// Wide: a linear model over one-hot/hashed sparse features (a 1-wide embedding summed over
/// fields). Deep: embeddings of the categorical fields plus dense features through an MLP.
#[derive(Module, Debug)]
pub struct WideDeep {
    wide: Embedding,
    bias: Linear,
    deep: Option<Deep>,
}

#[derive(Module, Debug)]
pub struct Deep {
    embed: Embedding,
    l1: Linear,
    l2: Linear,
    out: Linear,
    fields: usize,
    dim: usize,
}

pub struct WideDeepShape {
    pub wide_size: usize,
    /// Rows of each deep field's embedding table.
    pub deep_sizes: Vec<usize>,
    pub dense: usize,
    pub embed_dim: usize,
    pub mlp: [usize; 2],
    pub deep: bool,
}

impl WideDeep {
    pub fn new(s: &WideDeepShape, device: &Device) -> Self {
        let deep = s.deep.then(|| {
            let rows: usize = s.deep_sizes.iter().sum();
            let d_in = s.deep_sizes.len() * s.embed_dim + s.dense;
            Deep {
                embed: EmbeddingConfig::new(rows, s.embed_dim).init(device),
                l1: LinearConfig::new(d_in, s.mlp[0]).init(device),
                l2: LinearConfig::new(s.mlp[0], s.mlp[1]).init(device),
                out: LinearConfig::new(s.mlp[1], 1).init(device),
                fields: s.deep_sizes.len(),
                dim: s.embed_dim,
            }
        });
        WideDeep {
            wide: EmbeddingConfig::new(s.wide_size, 1).with_initializer(burn::nn::Initializer::Zeros).init(device),
            bias: LinearConfig::new(1, 1).with_initializer(burn::nn::Initializer::Zeros).init(device),
            deep,
        }
    }

    /// wide [B, Fw] Int, deep [B, Fd] Int (with per-field offsets applied), dense [B, D] → [B, 1].
    pub fn forward(&self, wide: Tensor<2, Int>, deep: Tensor<2, Int>, dense: Tensor<2>) -> Tensor<2> {
        let [b, _] = wide.dims();
        let device = dense.device();
        let w = self.wide.forward(wide).sum_dim(1).reshape([b, 1]);
        let mut y = w + self.bias.forward(Tensor::<2>::zeros([b, 1], &device));
        if let Some(d) = &self.deep {
            let e = d.embed.forward(deep).reshape([b, d.fields * d.dim]);
            let x = Tensor::cat(vec![e, dense], 1);
            let x = relu(d.l1.forward(x));
            let x = relu(d.l2.forward(x));
            y = y + d.out.forward(x);
        }
        y
    }
}
