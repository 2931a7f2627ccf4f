import FarmCert.Model

/-!
# Certificate contents and their checkers

The tasks of SPEC §1 are defined here, independently of the generator, so the
checkers re-derive the domain, the canonical row order, targets and alternates
rather than trusting the certificate. Every checker is a `Bool` function over
`Nat`, `Int` and `List` with structural recursion only, so the kernel can evaluate
it (`decide +kernel`); the forward replay is the exception (see `replayMatches`).
-/

namespace FarmCert

/-! ## Tasks (SPEC §1) -/

/-- A prompt family `[BOS, token, x1, opener, x2, x3]` closed by a lookup program. -/
structure TaskSpec where
  id : Nat
  token : Nat
  /-- The reference program P, opener ↦ target, openers in canonical (innermost) order. -/
  program : List (Nat × Nat)

def bos : Nat := 1
def fillers : List Nat := [5, 6, 7, 8]
def quoteClose : TaskSpec := ⟨0, 2, [(9, 9), (10, 10)]⟩
def bracketType : TaskSpec := ⟨1, 3, [(11, 13), (12, 14)]⟩
/-- Task ids are positions here: 0 `quote_close`, 1 `bracket_type`. -/
def tasks : List TaskSpec := [quoteClose, bracketType]

def findTask (id : Nat) : Option TaskSpec := tasks.find? (·.id == id)

/-- The candidate set T. -/
def TaskSpec.candidates (t : TaskSpec) : List Nat := t.program.map (·.2)

/-- Every prompt in canonical order: x1, x2, x3 outermost (lexicographic), opener innermost. -/
def TaskSpec.domain (t : TaskSpec) : List (List Nat) :=
  fillers.flatMap fun x1 => fillers.flatMap fun x2 => fillers.flatMap fun x3 =>
    t.program.map fun (o, _) => [bos, t.token, x1, o, x2, x3]

/-- P(x): the target for the opener at position 3, if it is an opener of `t`. -/
def TaskSpec.target? (t : TaskSpec) (prompt : List Nat) : Option Nat :=
  (t.program.find? (·.1 == prompt.getD 3 0)).map (·.2)

def noDuplicates {α : Type} [BEq α] : List α → Bool
  | [] => true
  | x :: xs => !(xs.any (· == x)) && noDuplicates xs

/-- The certified tasks (a certificate may cover one task or both): at least one, each known,
none twice. -/
def tasksOk (taskIds : List Nat) : Bool :=
  !taskIds.isEmpty && taskIds.all (fun id => (findTask id).isSome) && noDuplicates taskIds

/-- The domain of the listed tasks, `(task id, prompt)`: each task's prompts in canonical order,
the tasks in the order listed (`[0, 1]`: quote rows, then bracket rows). -/
def inputsOf (taskIds : List Nat) : List (Nat × List Nat) :=
  taskIds.flatMap fun id =>
    match findTask id with
    | some t => t.domain.map fun p => (t.id, p)
    | none => []

/-! ## Rows -/

/-- One certified input: the margin is `logit[target] − logit[alternate]` at the last position. -/
structure Row where
  index : Nat
  task : Nat
  prompt : List Nat
  target : Nat
  alternate : Nat
  margin : Q
  deriving Repr

/-- Row `i` is the `i`-th canonical input, its target is P(x) and its alternate the other
candidate of its task, and its margin is a valid rational. -/
def rowMatches (i : Nat) (expected : Nat × List Nat) (r : Row) : Bool :=
  match findTask r.task with
  | none => false
  | some t =>
    r.index == i && r.task == expected.1 && r.prompt == expected.2 &&
      t.target? r.prompt == some r.target &&
      t.candidates.filter (· != r.target) == [r.alternate] && r.margin.valid

/-- The rows are exactly the domain of the certified tasks, in order, with the right count. -/
def checkRows (taskIds : List Nat) (rows : List Row) : Bool :=
  let expected := inputsOf taskIds
  tasksOk taskIds && rows.length == expected.length &&
    (List.zip (List.range rows.length) (List.zip expected rows)).all
      fun (i, e, r) => rowMatches i e r

def marginsPositive (rows : List Row) : Bool := rows.all fun r => r.margin.isPos

def inputsAccepted (m : Model) (rows : List Row) : Bool :=
  rows.all fun r => m.accepts r.prompt &&
    decide (r.target < m.cfg.vocabSize) && decide (r.alternate < m.cfg.vocabSize)

/-! ## The replay -/

/-- The exact margin of a row under the model: final-position `logit[target] − logit[alternate]`. -/
def replayMargin (m : Model) (r : Row) : Q :=
  let logits := forward m r.prompt
  logits.getD r.target 0 - logits.getD r.alternate 0

/-- Every row's replayed margin equals the certificate's margin. Decided by compiled code
(`native_decide`): 256 exact forward passes are far beyond what the kernel evaluates. -/
def replayMatches (m : Model) (rows : List Row) : Bool :=
  rows.all fun r => decide (replayMargin m r = r.margin)

theorem replayMatches_sound {m : Model} {rows : List Row} (h : replayMatches m rows = true) :
    ∀ r ∈ rows, replayMargin m r = r.margin := by
  intro r hr
  exact of_decide_eq_true (List.all_eq_true.mp h r hr)

/-- With the replay checked, positive certified margins mean the model itself puts the
target strictly above the alternate on every row: the decision `d_T` equals P, no ties. -/
theorem decisions_of_checks {m : Model} {rows : List Row}
    (hr : replayMatches m rows = true) (hp : marginsPositive rows = true) :
    ∀ r ∈ rows, (replayMargin m r).isPos = true := by
  intro r hmem
  rw [replayMatches_sound hr r hmem]
  exact List.all_eq_true.mp hp r hmem

/-! ## Circuits and property results (SPEC §3, §4) -/

/-- A circuit as `circuit.json` lists it: node indices follow the circuit's node list,
which is in topological order, so every edge goes forward. -/
structure CircuitSummary where
  task : Nat
  nodes : Nat
  edges : List (Nat × Nat)
  deriving Repr

def lexLt (a b : Nat × Nat) : Bool := decide (a.1 < b.1) || (a.1 == b.1 && decide (a.2 < b.2))

/-- Edges go forward between existing nodes and are listed once, in sorted order. -/
def CircuitSummary.ok (c : CircuitSummary) : Bool :=
  (findTask c.task).isSome &&
    c.edges.all (fun (s, t) => decide (s < t) && decide (t < c.nodes)) &&
    (List.zip c.edges c.edges.tail).all fun (a, b) => lexLt a b

inductive Status where
  | verified
  | falsified
  | unknown
  deriving DecidableEq, Repr

/-- Property ids: 0 functional equivalence, 1 edge necessity, 2 content invariance,
3 robustness. Counts are of checked instances (inputs, edges or pairs). -/
structure PropertyResult where
  property : Nat
  task : Nat
  status : Status
  verified : Nat
  falsified : Nat
  unknown : Nat
  deriving Repr

def PropertyResult.total (r : PropertyResult) : Nat := r.verified + r.falsified + r.unknown

/-- Any counterexample falsifies; otherwise any undecided instance leaves it unknown. -/
def PropertyResult.statusAgrees (r : PropertyResult) : Bool :=
  match r.status with
  | .verified => r.falsified == 0 && r.unknown == 0
  | .falsified => decide (0 < r.falsified)
  | .unknown => r.falsified == 0 && decide (0 < r.unknown)

/-- Edge necessity has one instance per retained edge of its task's circuit (which must be
listed). -/
def PropertyResult.edgeCountOk (circuits : List CircuitSummary) (r : PropertyResult) : Bool :=
  match circuits.find? (·.task == r.task) with
  | some c => r.property != 1 || r.total == c.edges.length
  | none => r.property != 1

/-- The result is for a certified task and its counts add up: one instance per input for
functional equivalence and robustness, one per retained edge for edge necessity. -/
def PropertyResult.ok (taskIds : List Nat) (circuits : List CircuitSummary) (r : PropertyResult) :
    Bool :=
  match findTask r.task with
  | none => false
  | some t =>
    taskIds.contains r.task && decide (r.property < 4) && decide (0 < r.total) && r.statusAgrees &&
      (if r.property == 0 || r.property == 3 then r.total == t.domain.length else true) &&
      r.edgeCountOk circuits

def checkCircuits (circuits : List CircuitSummary) : Bool :=
  circuits.all CircuitSummary.ok && noDuplicates (circuits.map (·.task))

/-- Every property result is for a certified task and internally consistent, and each
(property, task) occurs once. -/
def checkProperties (taskIds : List Nat) (circuits : List CircuitSummary)
    (results : List PropertyResult) : Bool :=
  results.all (PropertyResult.ok taskIds circuits) &&
    noDuplicates (results.map fun r => (r.property, r.task))

end FarmCert
