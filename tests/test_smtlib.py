"""The term layer: exact numerals, affine algebra, deterministic text and hash."""

from fractions import Fraction as F

import pytest

from encoders.smtlib import (
    FALSE,
    TRUE,
    Affine,
    Query,
    and_,
    eq,
    ge,
    gt,
    implies,
    ite,
    le,
    lt,
    not_,
    numeral,
    or_,
)


def test_numerals_are_exact_and_never_decimal():
    assert numeral(F(22, 5)) == "(/ 22 5)"
    assert numeral(F(-1, 3)) == "(- (/ 1 3))"
    assert numeral(F(-7)) == "(- 7)"
    assert numeral(F(0)) == "0"
    # a float weight is taken at its exact binary value, not its decimal print
    assert numeral(F(0.1)) == "(/ 3602879701896397 36028797018963968)"


def test_affine_algebra_is_exact_and_drops_cancelled_terms():
    q = Query()
    x, y = q.real("x"), q.real("y")
    e = 3 * x - y * F(1, 2) + 1 - (x + x + x)
    assert e.coeffs == {"y": F(-1, 2)} and e.const == 1
    assert (-e).coeffs == {"y": F(1, 2)} and (-e).const == -1
    assert (2 - x).coeffs == {"x": -1} and (2 - x).const == 2
    d = Affine.dot([F(1, 3), 0, F(2)], [x, y, x + y], F(5))
    assert d.coeffs == {"x": F(7, 3), "y": F(2)} and d.const == 5
    assert Affine.sum([x, y, -x, 4]).smt() == "(+ y 4)"


def test_an_integer_row_over_its_denominator_is_the_same_term_as_its_fractions():
    q = Query()
    x, y = q.define("x", Affine({}, F(7, 3)) + q.real("a")), q.real("y")
    terms = [x * F(1, 6), y, x + y * F(2, 5) + F(1, 7), -x * F(1, 6)]
    weights, den, const = [3, 1, -4, -21], 8, 5
    row = Affine.row(weights, den, terms, const)
    dot = Affine.dot([F(w, den) for w in weights], terms, F(const, den))
    assert (row.coeffs, row.const) == (dot.coeffs, dot.const)
    assert row.smt() == dot.smt() and "x" not in row.coeffs  # cancelled, no (* 0 x)
    with pytest.raises(ValueError, match="3 weights applied to 4"):
        Affine.row(weights[:3], den, terms)


def test_floats_are_refused():
    x = Query().real("x")
    with pytest.raises(TypeError):
        x * 4.4
    with pytest.raises(TypeError):
        le(x, 4.4)


def test_relations_normalise_constants_to_the_right():
    q = Query()
    x, y = q.real("x"), q.real("y")
    assert le(x * 5, F(22, 5)).text == "(<= (* 25 x) 22)"  # multiplied through
    assert gt(x - y, F(-1, 3)).text == "(> (+ (* 3 x) (* (- 3) y)) (- 1))"
    assert eq(x + 1, y).text == "(= (+ x (- y)) (- 1))"
    assert lt(x, x + 1) is TRUE and ge(x, x + 1) is FALSE


def test_connectives_and_ite():
    q = Query()
    x = q.real("x")
    a, b = ge(x, 0), lt(x, 1)
    assert and_(a, TRUE, b).text == "(and (>= x 0) (< x 1))"
    assert or_() is FALSE and and_(a) is a
    assert not_(a).text == "(not (>= x 0))"
    assert implies(a, b).text == "(=> (>= x 0) (< x 1))"
    r = q.define("r", ite(a, x, 0))
    assert r.coeffs == {"r": 1}
    assert "(assert (= r (ite (>= x 0) x 0)))" in q.text()


def test_definitions_name_an_integer_multiple_of_their_value():
    """A defined variable stands for L·value with integer coefficients; the term handed
    back divides by L, so later expressions mean the value itself."""
    q = Query()
    x = q.real("x")
    h = q.define("h", x * F(1, 100) + F(22, 5))
    assert h.coeffs == {"h": F(1, 100)} and h.const == 0
    g = q.define("g", h * F(3, 7))  # 3/700 of the variable h
    assert g.coeffs == {"g": F(1, 700)}
    r = q.define("r", ite(ge(g, 0), g, g * F(1, 100)))
    m = q.define("m", r + F(1, 3), model=True)  # read back: keeps its plain value
    assert m.coeffs == {"m": 1}
    text = q.text()
    assert "(assert (= h (+ x 440)))" in text and "(assert (= g (* 3 h)))" in text
    assert "(assert (= r (ite (>= g 0) g (* (/ 1 100) g))))" not in text
    assert "(assert (= r (ite (>= g 0) (* 100 g) g)))" in text
    assert "(assert (= (* 210000 m) (+ (* 3 r) 70000)))" in text


def test_a_constant_with_a_huge_denominator_stays_out_of_the_coefficients():
    """An offset like a run's exact residual (hundreds of digits) would otherwise be
    multiplied into the coefficients of free variables, which the solver pivots on."""
    q = Query()
    x, y = q.real("x"), q.real("y")
    big = F(1, 3**80)
    r = q.define("r", x + big)
    assert r.coeffs == {"r": 1} and f"(assert (= r (+ x (/ 1 {3**80}))))" in q.text()
    assert lt(x - y * 2, big).text == f"(< (+ x (* (- 2) y)) (/ 1 {3**80}))"


def _query() -> Query:
    q = Query()
    x = q.real("x", model=True)
    h = q.define("h", x * F(1, 100) + F(22, 5))
    q.add(le(h, 5), gt(x, -1))
    return q


def test_text_is_a_complete_script_and_hash_is_deterministic():
    q = _query()
    text = q.text()
    assert text.startswith("(set-option :produce-models true)\n(set-logic QF_LRA)\n")
    assert text.endswith("(check-sat)\n") and "." not in text
    assert q.model_vars == ("x",) and len(q) == 3
    assert q.hash == _query().hash and len(q.hash) == 64


def test_rendered_query_is_frozen_and_symbols_checked():
    q = _query()
    q.text()
    with pytest.raises(RuntimeError):
        q.add(TRUE)
    with pytest.raises(ValueError):
        Query().real("bad name")
    q2 = Query()
    q2.real("x")
    with pytest.raises(ValueError):
        q2.real("x")


def test_sections_render_in_order_and_include_reproduces_the_text():
    """A section sealed in one query and included in another gives the same script."""
    def build(shared) -> Query:
        q = Query()
        if shared is None:
            q.section("pre")
            a = q.define("a", Affine(const=F(1, 3)))
            q.boolean("g", gt(a, 0))
        else:
            q.include(shared)
            a = Affine({"a": F(1)})
        q.section("last")
        q.add(lt(a, 0))
        return q

    first = Query()
    first.section("pre")
    first.define("a", Affine(const=F(1, 3)))
    first.boolean("g", gt(Affine({"a": F(1)}), 0))
    shared = first.seal()
    assert shared.names == {"a", "g"} and shared.text.startswith("; section pre\n")
    built, reused = build(None), build(shared)
    assert built.text() == reused.text() and built.hash == reused.hash
    assert built.text().index("; section pre") < built.text().index("; section last")
    assert "(declare-fun g () Bool)" in built.text()
    with pytest.raises(ValueError, match="redeclares"):
        q = Query()
        q.real("a")
        q.include(shared)


def test_a_fragment_replayed_in_another_query_reproduces_its_lines():
    """What a query gained between a mark and `since` is added to another query as is,
    model variables included; a name the other query already has is refused."""
    def build(q: Query) -> None:
        x = q.real("x", model=True)
        y = q.define("y", x * F(1, 3) + 2)
        q.boolean("g", gt(y, 0))

    whole = Query()
    whole.real("before")
    mark = whole.mark()
    build(whole)
    fragment = whole.since(mark)
    assert fragment.names == ("x", "y", "g") and fragment.model_vars == ("x",)
    other = Query()
    other.real("before")
    other.replay(fragment)
    assert other.text() == whole.text() and other.model_vars == ("x",)
    clash = Query()
    clash.real("y")
    with pytest.raises(ValueError, match="redeclares"):
        clash.replay(fragment)
