"""The PaddlePaddle port of model_torch.py.

Same computation, PaddleNLP-style parameter names (bert.embeddings.layer_norm,
bert.encoder.layers.N.self_attn.q_proj, norm1, linear1, ...; the mapping is
common.TORCH_TO_PADDLE), and paddle's Linear layout: weight [in, out] where
torch has [out, in].
"""
import math

import paddle
from paddle import nn
from paddle.nn import functional as F


class Embeddings(nn.Layer):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embeddings = nn.Embedding(c["max_position"], c["hidden_size"])
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], c["hidden_size"])
        self.layer_norm = nn.LayerNorm(c["hidden_size"], epsilon=c["layer_norm_eps"])
        self.dropout = nn.Dropout(c["dropout"])

    def forward(self, input_ids, token_type_ids):
        positions = paddle.arange(input_ids.shape[1], dtype="int64").unsqueeze(0)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.layer_norm(x))


class SelfAttention(nn.Layer):
    def __init__(self, c):
        super().__init__()
        self.num_heads = c["num_heads"]
        self.head_size = c["hidden_size"] // c["num_heads"]
        self.q_proj = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.k_proj = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.v_proj = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.out_proj = nn.Linear(c["hidden_size"], c["hidden_size"])
        self.dropout = nn.Dropout(c["dropout"])

    def _heads(self, x):  # [B, T, H] -> [B, heads, T, head_size]
        b, t = x.shape[0], x.shape[1]
        return x.reshape([b, t, self.num_heads, self.head_size]).transpose([0, 2, 1, 3])

    def forward(self, x, mask_bias):
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        scores = paddle.matmul(q, k, transpose_y=True) / math.sqrt(self.head_size) + mask_bias
        probs = self.dropout(F.softmax(scores, axis=-1))
        ctx = paddle.matmul(probs, v).transpose([0, 2, 1, 3])
        return self.out_proj(ctx.reshape([x.shape[0], x.shape[1], -1]))


class EncoderLayer(nn.Layer):
    """Post-LN: norm1(x + attn(x)), then norm2(h + linear2(gelu(linear1(h)))).

    bug (localize.py's planted porting bugs; None = the correct port):
    "forward": norm1 with epsilon 1e-5 instead of the config's; "backward":
    norm1's residual input detached, which changes no forward value but cuts
    the residual path out of the gradient."""

    def __init__(self, c, bug=None):
        super().__init__()
        self.bug = bug
        self.self_attn = SelfAttention(c)
        eps1 = 1e-5 if bug == "forward" else c["layer_norm_eps"]
        self.norm1 = nn.LayerNorm(c["hidden_size"], epsilon=eps1)
        self.linear1 = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.linear2 = nn.Linear(c["intermediate_size"], c["hidden_size"])
        self.norm2 = nn.LayerNorm(c["hidden_size"], epsilon=c["layer_norm_eps"])
        self.dropout1 = nn.Dropout(c["dropout"])
        self.dropout2 = nn.Dropout(c["dropout"])

    def forward(self, x, mask_bias):
        residual = x.detach() if self.bug == "backward" else x
        h = self.norm1(residual + self.dropout1(self.self_attn(x, mask_bias)))
        ffn = self.linear2(F.gelu(self.linear1(h), approximate=False))
        return self.norm2(h + self.dropout2(ffn))


class Encoder(nn.Layer):
    def __init__(self, c, bug=None):
        super().__init__()
        # A planted bug (localize.py) goes into encoder layer 1 only.
        self.layers = nn.LayerList([EncoderLayer(c, bug if i == 1 else None)
                                    for i in range(c["num_layers"])])

    def forward(self, x, mask_bias):
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x


class Pooler(nn.Layer):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])

    def forward(self, x):
        return paddle.tanh(self.dense(x[:, 0]))


class Bert(nn.Layer):
    def __init__(self, c, bug=None):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c, bug)
        self.pooler = Pooler(c)

    def forward(self, input_ids, token_type_ids, attention_mask):
        # [B, T] of 1 (attend) / 0 (padding) -> additive bias [B, 1, 1, T]
        mask_bias = (1.0 - attention_mask.unsqueeze([1, 2]).astype("float32")) * -10000.0
        x = self.encoder(self.embeddings(input_ids, token_type_ids), mask_bias)
        return self.pooler(x)


class BertForSequenceClassification(nn.Layer):
    """bug: None (the port), or "forward" / "backward", a bug planted in
    encoder layer 1's norm1 (see EncoderLayer) for localize.py."""

    def __init__(self, c, bug=None):
        super().__init__()
        if bug not in (None, "forward", "backward"):
            raise ValueError(f"bug must be None, 'forward' or 'backward', got {bug!r}")
        self.bert = Bert(c, bug)
        self.dropout = nn.Dropout(c["dropout"])
        self.classifier = nn.Linear(c["hidden_size"], c["num_labels"])

    def forward(self, input_ids, token_type_ids, attention_mask):
        pooled = self.bert(input_ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(pooled))
