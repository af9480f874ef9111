//! The two Burn networks: a stacked LSTM forecaster and a wide&deep regressor/classifier.
//!
//! The forecaster keeps Burn's `nn::Lstm` parameters but runs each layer as one fused operation
//! with a hand-written backward pass (`super::lstm`). (A cell written with Burn tensor ops, one
//! matmul for all gates then slices, trained ~30% slower than `nn::Lstm`: in Burn's autodiff the
//! backward pass of each slice allocates a gradient the size of the whole gate matrix.)

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, Lstm, LstmConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

#[derive(Module, Debug)]
pub struct Forecaster {
    layers: Vec<Lstm>,
    head: Linear,
}

impl Forecaster {
    pub fn new(features: usize, hidden: usize, layers: usize, horizon: usize, device: &Device) -> Self {
        let layers = (0..layers.max(1))
            .map(|l| LstmConfig::new(if l == 0 { features } else { hidden }, hidden, true).init(device))
            .collect();
        Forecaster { layers, head: LinearConfig::new(hidden, horizon).init(device) }
    }

    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// [B, W, F] → [B, H]. `masks`: one dropout mask [B, hidden] per layer, applied to that
    /// layer's output at every step (the same mask through time), or none.
    pub fn forward(&self, x: Tensor<3>, masks: Option<&[Tensor<2>]>) -> Tensor<2> {
        let n = self.layers.len();
        let mut x = x;
        let mut last = None;
        for (l, layer) in self.layers.iter().enumerate() {
            if l + 1 == n {
                // The head reads the last step only: the op returns just that.
                let hidden = fused_lstm_last(layer, x);
                last = Some(match masks {
                    Some(m) => hidden * m[l].clone(),
                    None => hidden,
                });
                break;
            }
            let seq = fused_lstm(layer, x);
            x = match masks {
                Some(m) => seq * m[l].clone().unsqueeze_dim::<3>(1),
                None => seq,
            };
        }
        self.head.forward(last.expect("at least one layer"))
    }
}

/// Runs `lstm` (zero initial state) as one fused operation: the four gates' weights are joined
/// into `[in, 4H]` and `[H, 4H]` matrices, in the order input, forget, cell, output.
pub fn fused_lstm(lstm: &Lstm, x: Tensor<3>) -> Tensor<3> {
    let (w_ih, w_hh, bias) = fused_weights(lstm, &x.device());
    super::lstm::lstm_sequence(x, w_ih, w_hh, bias)
}

/// [`fused_lstm`]'s last step only: [B, T, in] → [B, H].
pub fn fused_lstm_last(lstm: &Lstm, x: Tensor<3>) -> Tensor<2> {
    let (w_ih, w_hh, bias) = fused_weights(lstm, &x.device());
    super::lstm::lstm_last(x, w_ih, w_hh, bias)
}

/// `lstm`'s gate weights joined: `[in, 4H]`, `[H, 4H]` and the summed biases `[4H]`.
fn fused_weights(lstm: &Lstm, device: &Device) -> (Tensor<2>, Tensor<2>, Tensor<1>) {
    let forget = lstm.forget_gate.as_ref().expect("the forecaster's LSTM has a forget gate");
    let gates = [&lstm.input_gate, forget, &lstm.cell_gate, &lstm.output_gate];
    let join =
        |f: &dyn Fn(&burn::nn::GateController) -> Tensor<2>| Tensor::cat(gates.iter().map(|g| f(g)).collect(), 1);
    let w_ih = join(&|g| g.input_transform.weight.val());
    let w_hh = join(&|g| g.hidden_transform.weight.val());
    let bias = |l: &Linear| l.bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([lstm.d_hidden], device));
    let bias = Tensor::cat(gates.iter().map(|g| bias(&g.input_transform) + bias(&g.hidden_transform)).collect(), 0);
    (w_ih, w_hh, bias)
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
