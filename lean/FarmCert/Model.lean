import FarmCert.Q

/-!
# Exact replay of the verifiable GPT (SPEC §2)

The model evaluated in exact rationals: token + position embeddings, pre-norm
blocks `h = x + Attn(Norm(x)); h = h + MLP(Norm(h))`, Signed L1 BandNorm (or the
identity for `norm_variant: none`), sparsemax attention over the causal prefix,
LeakyReLU with slope 1/100, and `lm_head` with an optional bias. Vectors are
lists (at most 64 wide here), matrices are stored `[out][in]` as in PyTorch.

Everything is total and structurally recursive; out-of-range reads return a
default, which `Model.wellFormed` rules out for every certified model.
-/

namespace FarmCert

abbrev Vec := List Q
/-- A weight matrix, one row per output: `y i = Σ j, W i j * x j`. -/
abbrev Mat := List (List Q)

def dot : Vec → Vec → Q
  | a :: as, b :: bs => a * b + dot as bs
  | _, _ => 0

def vadd (a b : Vec) : Vec := List.zipWith (· + ·) a b

def vsum (v : Vec) : Q := v.foldl (· + ·) 0

def mean (v : Vec) : Q := vsum v / Q.ofNat v.length

/-- Running sums `[z₁, z₁ + z₂, …]`, starting from `s`. -/
def cumsumFrom (s : Q) : Vec → Vec
  | [] => []
  | z :: zs => (s + z) :: cumsumFrom (s + z) zs

/-- Insert into a list sorted in descending order. -/
def insertDesc (x : Q) : Vec → Vec
  | [] => [x]
  | y :: ys => if Q.lt y x then x :: y :: ys else y :: insertDesc x ys

/-- Sort descending (insertion sort: vectors are short, and only values matter). -/
def sortDesc (v : Vec) : Vec := v.foldr insertDesc []

structure Linear where
  weight : Mat
  bias : Option Vec

def Linear.apply (l : Linear) (x : Vec) : Vec :=
  let y := l.weight.map (dot · x)
  match l.bias with
  | some b => vadd y b
  | none => y

/-- BandNorm's affine output `γ ⊙ z + β`; both empty when the norm is the identity. -/
structure NormParams where
  gamma : Vec
  beta : Vec

structure Block where
  normAttn : NormParams
  q : Linear
  k : Linear
  v : Linear
  o : Linear
  normMlp : NormParams
  up : Linear
  down : Linear

structure Config where
  vocabSize : Nat
  seqLen : Nat
  dModel : Nat
  nLayers : Nat
  nHeads : Nat
  dMlp : Nat
  /-- `true`: Signed L1 BandNorm; `false`: `norm_variant: none` (the identity). -/
  bandNorm : Bool
  lmHeadBias : Bool
  /-- The divisor of attention scores: the float32 value of `√headDim`, as an exact rational. -/
  attnScale : Q

def Config.headDim (c : Config) : Nat := c.dModel / c.nHeads

/-- `0.55 · d / 2`, taken exactly as written (`22/5` for `d = 16`). -/
def Config.halfLow (c : Config) : Q := Q.normalize (Int.ofNat (11 * c.dModel)) 40

/-- `1.05 · d / 2` (`42/5` for `d = 16`). -/
def Config.halfHigh (c : Config) : Q := Q.normalize (Int.ofNat (21 * c.dModel)) 40

structure Model where
  cfg : Config
  /-- `[vocab][d]` -/
  wte : Mat
  /-- `[position][d]` -/
  wpe : Mat
  blocks : List Block
  normFinal : NormParams
  lmHead : Linear

/-! ## Operators -/

/-- Sparsemax: sort descending; `k` = the largest `k` with `1 + k·z₍ₖ₎ > Σ_{j≤k} z₍ⱼ₎`;
`τ = (Σ_{j≤k} z₍ⱼ₎ − 1) / k`; output `max(zᵢ − τ, 0)`. -/
def sparsemax (z : Vec) : Vec :=
  let sorted := sortDesc z
  let ks := (List.range sorted.length).map (· + 1)
  let steps := List.zip ks (List.zip sorted (cumsumFrom 0 sorted))
  let support := steps.filter fun (k, zk, s) => Q.lt s (1 + Q.ofNat k * zk)
  -- `k = 1` always qualifies (`1 + z₁ > z₁`); the last qualifying entry is the largest `k`.
  let (k, _, s) := support.getLast?.getD (1, 0, 0)
  let tau := (s - 1) / Q.ofNat k
  z.map fun zi => Q.max (zi - tau) 0

/-- Euclidean projection of `s ≥ 0` onto `{z ≥ 0, Σz ≤ hi}` (BandNorm step 3a): sort
descending, `cand_k = (cumsum_k − hi)/k`, `ρ` = (number of `k` with `sorted_k > cand_k`) − 1
clamped to `[0, d−1]` (0-based), `τ = cand_ρ`, output `max(s − τ, 0)`. -/
def project (s : Vec) (hi : Q) : Vec :=
  let sorted := sortDesc s
  let d := s.length
  let cand := (List.zip (List.range d) (cumsumFrom 0 sorted)).map
    fun (i, c) => (c - hi) / Q.ofNat (i + 1)
  let count := ((List.zip sorted cand).filter fun (x, c) => Q.lt c x).length
  let rho := min (count - 1) (d - 1)
  let tau := cand.getD rho 0
  s.map fun x => Q.max (x - tau) 0

/-- One side of BandNorm (step 3): project when `Σs > hi`, then add
`deficit = max(lo − Σs, 0)` spread evenly over the positive coordinates, or over the
`fallback` mask when none is positive. -/
def bandSide (s : Vec) (fallback : List Bool) (lo hi : Q) : Vec :=
  let s := if Q.lt hi (vsum s) then project s hi else s
  let deficit := Q.max (lo - vsum s) 0
  let positive := s.map (Q.lt 0 ·)
  let active := if positive.any id then positive else fallback
  let lift := deficit / Q.ofNat (active.filter id).length
  List.zipWith (fun x a => if a then x + lift else x) s active

/-- Signed L1 BandNorm: centre, split into positive and negative parts, bring each side's
L1 mass into `[lo, hi]`, recombine, re-centre, then `γ ⊙ z + β`. No ε, no square root. -/
def bandNorm (lo hi : Q) (p : NormParams) (x : Vec) : Vec :=
  let mu := mean x
  let c := x.map (· - mu)
  let even := (List.range x.length).map (· % 2 == 0)
  let pos := bandSide (c.map (Q.max · 0)) even lo hi
  let neg := bandSide (c.map fun ci => Q.max (-ci) 0) (even.map (!·)) lo hi
  let z := List.zipWith (· - ·) pos neg
  let mz := mean z
  vadd (List.zipWith (· * ·) p.gamma (z.map (· - mz))) p.beta

def norm (c : Config) (p : NormParams) (x : Vec) : Vec :=
  if c.bandNorm then bandNorm c.halfLow c.halfHigh p x else x

def leakyRelu (x : Q) : Q := if Q.lt x 0 then x * Q.mk 1 100 else x

/-- Coordinates `[lo, lo + len)`: one head's slice of a `d_model` vector. -/
def slice (v : Vec) (lo len : Nat) : Vec := (v.drop lo).take len

/-- `Σⱼ wⱼ vⱼ` for vectors of width `d`. -/
def weightedSum (w : Vec) (vs : List Vec) (d : Nat) : Vec :=
  (List.zip w vs).foldl (fun acc p => vadd acc (p.2.map (p.1 * ·))) (List.replicate d (0 : Q))

/-- Multi-head sparsemax attention over normalised inputs `xs` (one per position): head `h`
of position `i` scores `q_i·k_j / scale` for `j ≤ i`, weights them by sparsemax and sums
`v_j`; the heads are concatenated and mapped by `W_o`, `b_o`. -/
def attention (c : Config) (blk : Block) (xs : List Vec) : List Vec :=
  let qs := xs.map blk.q.apply
  let ks := xs.map blk.k.apply
  let vs := xs.map blk.v.apply
  let hd := c.headDim
  (List.range xs.length).map fun i =>
    let heads := (List.range c.nHeads).map fun h =>
      let qi := slice (qs.getD i []) (h * hd) hd
      let keys := (ks.take (i + 1)).map (slice · (h * hd) hd)
      let values := (vs.take (i + 1)).map (slice · (h * hd) hd)
      weightedSum (sparsemax (keys.map fun kj => dot qi kj / c.attnScale)) values hd
    blk.o.apply heads.flatten

def mlp (blk : Block) (x : Vec) : Vec := blk.down.apply ((blk.up.apply x).map leakyRelu)

/-- One pre-norm residual block over the whole sequence. -/
def block (c : Config) (blk : Block) (xs : List Vec) : List Vec :=
  let hs := List.zipWith vadd xs (attention c blk (xs.map (norm c blk.normAttn)))
  hs.map fun h => vadd h (mlp blk (norm c blk.normMlp h))

/-- Logits at the final position of `prompt` (token ids), in exact rationals. -/
def forward (m : Model) (prompt : List Nat) : Vec :=
  let xs := (List.zip (List.range prompt.length) prompt).map
    fun (i, t) => vadd (m.wte.getD t []) (m.wpe.getD i [])
  let hs := m.blocks.foldl (fun acc blk => block m.cfg blk acc) xs
  m.lmHead.apply (norm m.cfg m.normFinal (hs.getLast?.getD []))

/-! ## Shapes -/

def vecOk (n : Nat) (v : Vec) : Bool := v.length == n && v.all Q.valid

def matOk (rows cols : Nat) (w : Mat) : Bool := w.length == rows && w.all (vecOk cols)

def Linear.ok (outs ins : Nat) (hasBias : Bool) (l : Linear) : Bool :=
  matOk outs ins l.weight &&
    match l.bias with
    | some b => hasBias && vecOk outs b
    | none => !hasBias

def NormParams.ok (c : Config) (p : NormParams) : Bool :=
  if c.bandNorm then vecOk c.dModel p.gamma && vecOk c.dModel p.beta
  else p.gamma.isEmpty && p.beta.isEmpty

def Block.ok (c : Config) (b : Block) : Bool :=
  let d := c.dModel
  b.normAttn.ok c && b.normMlp.ok c &&
    b.q.ok d d true && b.k.ok d d true && b.v.ok d d true && b.o.ok d d true &&
    b.up.ok c.dMlp d true && b.down.ok d c.dMlp true

/-- The attention divisor is the float32 value of `√headDim`: exactly `k` when
`headDim = k²`; otherwise its square is within float32 rounding, `|s² − hd| ≤ hd / 2²²`
(a float32 has a 24-bit significand, so `|s − √hd| ≤ 2⁻²⁴ √hd`). -/
def Config.scaleOk (c : Config) : Bool :=
  let s := c.attnScale
  let hd := c.headDim
  s.valid && s.isPos &&
    match (List.range (hd + 1)).find? (fun k => k * k == hd) with
    | some k => s == Q.ofNat k
    | none => Q.le (Q.abs (s * s - Q.ofNat hd) * Q.ofNat (2 ^ 22)) (Q.ofNat hd)

/-- Every tensor has the shape the config implies, and every literal a positive
denominator: the replay then never reads out of range. -/
def Model.wellFormed (m : Model) : Bool :=
  let c := m.cfg
  let d := c.dModel
  decide (0 < c.nHeads) && d % c.nHeads == 0 && decide (2 ≤ d) && c.scaleOk &&
    matOk c.vocabSize d m.wte && matOk c.seqLen d m.wpe &&
    m.blocks.length == c.nLayers && m.blocks.all (Block.ok c) &&
    m.normFinal.ok c && m.lmHead.ok c.vocabSize d c.lmHeadBias

/-- Prompts the model can take: at most `seqLen` tokens, each in the vocabulary. -/
def Model.accepts (m : Model) (prompt : List Nat) : Bool :=
  decide (prompt.length ≤ m.cfg.seqLen) && prompt.all fun t => decide (t < m.cfg.vocabSize)

end FarmCert
