/-!
# Exact rationals

A small exact rational type, enough to replay the verifiable GPT exactly.
We keep our own type (rather than Mathlib's or a newer core's `Rat`) so the
package builds with core Lean alone on the pinned toolchain.

Invariant: `den > 0`. Every operation below preserves it and returns lowest
terms; literals written by the generator are checked with `Q.valid`.
-/

namespace FarmCert

/-- The rational `num / den`. -/
structure Q where
  num : Int
  den : Nat
  deriving DecidableEq, Repr

namespace Q

instance : Inhabited Q := ⟨⟨0, 1⟩⟩

/-- `n / d` in lowest terms; a zero denominator gives `0`, as division by zero does in Lean. -/
def normalize (n : Int) (d : Nat) : Q :=
  if d = 0 then ⟨0, 1⟩
  else
    let g := Nat.gcd n.natAbs d
    ⟨n / (g : Int), d / g⟩

def ofNat (n : Nat) : Q := ⟨Int.ofNat n, 1⟩

instance {n : Nat} : OfNat Q n := ⟨Q.ofNat n⟩

/-- A literal is meaningful only with a positive denominator. -/
def valid (q : Q) : Bool := decide (0 < q.den)

protected def add (a b : Q) : Q :=
  normalize (a.num * (b.den : Int) + b.num * (a.den : Int)) (a.den * b.den)

protected def neg (a : Q) : Q := ⟨-a.num, a.den⟩

protected def sub (a b : Q) : Q := Q.add a (Q.neg b)

protected def mul (a b : Q) : Q := normalize (a.num * b.num) (a.den * b.den)

/-- Division; `a / 0 = 0` (never used with a zero divisor by the replay). -/
protected def div (a b : Q) : Q :=
  if b.num < 0 then normalize (-(a.num * (b.den : Int))) (a.den * b.num.natAbs)
  else normalize (a.num * (b.den : Int)) (a.den * b.num.natAbs)

instance : Add Q := ⟨Q.add⟩
instance : Sub Q := ⟨Q.sub⟩
instance : Mul Q := ⟨Q.mul⟩
instance : Div Q := ⟨Q.div⟩
instance : Neg Q := ⟨Q.neg⟩

/-- `a < b`, exact: cross-multiplication is order-preserving because denominators are positive. -/
protected def lt (a b : Q) : Bool := decide (a.num * (b.den : Int) < b.num * (a.den : Int))

protected def le (a b : Q) : Bool := decide (a.num * (b.den : Int) ≤ b.num * (a.den : Int))

protected def max (a b : Q) : Q := if Q.lt a b then b else a

protected def abs (a : Q) : Q := ⟨Int.ofNat a.num.natAbs, a.den⟩

/-- `a > 0`. -/
def isPos (a : Q) : Bool := decide (0 < a.num)

end Q

end FarmCert
