//! Exact rational numbers for expression values.
//!
//! Every number an expression computes is held as `num / den` with `i128`
//! parts and `den > 0`. Addition, subtraction, multiplication and division
//! are exact (no rounding at all); a result whose parts do not fit `i128`
//! even after reducing by their greatest common divisor is `None`
//! (unknown). Comparison never overflows: when the cross products do not
//! fit `i128` they are compared as 256-bit integers.
//!
//! The fast paths (equal denominators, products that fit) are a few
//! integer multiplications; gcd reduction only runs when a fast path
//! overflows.

use std::cmp::Ordering;

use crate::model::{Fixed, Fraction, FIXED_SCALE};

/// `10^8`: the denominator of a [`Fixed`] value.
pub(super) const SCALE: i128 = FIXED_SCALE as i128;

/// An exact rational number `num / den`, `den > 0`. Not necessarily in
/// lowest terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ratio {
    num: i128,
    den: i128,
}

impl Ratio {
    pub(crate) const ZERO: Ratio = Ratio { num: 0, den: 1 };

    /// A whole number.
    #[inline]
    pub(crate) const fn int(value: i128) -> Ratio {
        Ratio { num: value, den: 1 }
    }

    /// A [`Fixed`] value, exactly.
    #[inline]
    pub(crate) const fn fixed(value: Fixed) -> Ratio {
        Ratio {
            num: value.raw() as i128,
            den: SCALE,
        }
    }

    /// A raw count of 10^-8 units (such as a window's unbounded sum).
    #[inline]
    pub(crate) const fn raw_fixed(raw: i128) -> Ratio {
        Ratio { num: raw, den: SCALE }
    }

    /// A fraction (parts per 10^8), exactly.
    pub(crate) fn fraction(value: Fraction) -> Ratio {
        Ratio {
            num: i128::from(value.raw()),
            den: SCALE,
        }
        .reduced()
    }

    /// `num / den`; `None` when `den` is zero (or the sign cannot be moved).
    #[inline]
    pub(crate) fn new(num: i128, den: i128) -> Option<Ratio> {
        match den.cmp(&0) {
            Ordering::Greater => Some(Ratio { num, den }),
            Ordering::Less => Some(Ratio {
                num: num.checked_neg()?,
                den: den.checked_neg()?,
            }),
            Ordering::Equal => None,
        }
    }

    /// `(num, den)`.
    pub(crate) fn parts(self) -> (i128, i128) {
        (self.num, self.den)
    }

    /// The same value in lowest terms.
    pub(crate) fn reduced(self) -> Ratio {
        let g = gcd(self.num.unsigned_abs(), self.den.unsigned_abs());
        if g <= 1 {
            return self;
        }
        // g divides both exactly and den > 0, so g <= den <= i128::MAX.
        let g = g as i128;
        Ratio {
            num: self.num / g,
            den: self.den / g,
        }
    }

    #[inline]
    pub(crate) fn add(self, other: Ratio) -> Option<Ratio> {
        if self.den == other.den {
            if let Some(num) = self.num.checked_add(other.num) {
                return Some(Ratio { num, den: self.den });
            }
        } else if let (Some(a), Some(b), Some(den)) = (
            mul(self.num, other.den),
            mul(other.num, self.den),
            mul(self.den, other.den),
        ) {
            if let Some(num) = a.checked_add(b) {
                return Some(Ratio { num, den });
            }
        }
        self.add_slow(other)
    }

    #[cold]
    fn add_slow(self, other: Ratio) -> Option<Ratio> {
        let a = self.reduced();
        let b = other.reduced();
        let g = gcd(a.den.unsigned_abs(), b.den.unsigned_abs()) as i128;
        let (da, db) = (a.den / g, b.den / g);
        let num = a.num.checked_mul(db)?.checked_add(b.num.checked_mul(da)?)?;
        let den = a.den.checked_mul(db)?;
        Some(Ratio { num, den }.reduced())
    }

    #[inline]
    pub(crate) fn neg(self) -> Option<Ratio> {
        Some(Ratio {
            num: self.num.checked_neg()?,
            den: self.den,
        })
    }

    #[inline]
    pub(crate) fn sub(self, other: Ratio) -> Option<Ratio> {
        match other.num.checked_neg() {
            Some(num) => self.add(Ratio { num, den: other.den }),
            None => self.sub_slow(other),
        }
    }

    #[cold]
    fn sub_slow(self, other: Ratio) -> Option<Ratio> {
        self.add(other.reduced().neg()?)
    }

    #[inline]
    pub(crate) fn abs(self) -> Option<Ratio> {
        Some(Ratio {
            num: self.num.checked_abs()?,
            den: self.den,
        })
    }

    #[inline]
    pub(crate) fn mul(self, other: Ratio) -> Option<Ratio> {
        if let (Some(num), Some(den)) = (mul(self.num, other.num), mul(self.den, other.den)) {
            return Some(Ratio { num, den });
        }
        self.mul_slow(other)
    }

    #[cold]
    fn mul_slow(self, other: Ratio) -> Option<Ratio> {
        let a = self.reduced();
        let b = other.reduced();
        let g1 = gcd(a.num.unsigned_abs(), b.den.unsigned_abs()).max(1) as i128;
        let g2 = gcd(b.num.unsigned_abs(), a.den.unsigned_abs()).max(1) as i128;
        let num = (a.num / g1).checked_mul(b.num / g2)?;
        let den = (a.den / g2).checked_mul(b.den / g1)?;
        Some(Ratio { num, den })
    }

    /// `self / other`; `None` when `other` is zero.
    #[inline]
    pub(crate) fn div(self, other: Ratio) -> Option<Ratio> {
        if other.num == 0 {
            return None;
        }
        if self.den == other.den {
            return Ratio::new(self.num, other.num);
        }
        let recip = Ratio::new(other.den, other.num).or_else(|| {
            let r = other.reduced();
            Ratio::new(r.den, r.num)
        })?;
        self.mul(recip)
    }

    /// Exact comparison; never overflows.
    #[inline]
    pub(crate) fn compare(self, other: Ratio) -> Ordering {
        if self.den == other.den {
            return self.num.cmp(&other.num);
        }
        match (mul(self.num, other.den), mul(other.num, self.den)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => cmp_products(self.num, other.den, other.num, self.den),
        }
    }

    /// The value truncated toward zero to 8 decimals; `None` when it does
    /// not fit a [`Fixed`].
    pub(crate) fn to_fixed(self) -> Option<Fixed> {
        let r = if self.num.checked_mul(SCALE).is_some() {
            self
        } else {
            self.reduced()
        };
        let raw = match r.num.checked_mul(SCALE) {
            Some(scaled) => scaled / r.den,
            None => {
                let whole = r.num / r.den;
                let rest = r.num % r.den;
                let frac = match rest.checked_mul(SCALE) {
                    Some(scaled) => scaled / r.den,
                    None => frac_digits(rest, r.den),
                };
                whole.checked_mul(SCALE)?.checked_add(frac)?
            }
        };
        i64::try_from(raw).ok().map(Fixed::from_raw)
    }
}

/// `|rest| × 10^8 / den` truncated, with `rest`'s sign, for `|rest| < den`:
/// long division one decimal digit at a time, for denominators so large
/// that `rest × 10^8` does not fit `i128`. Each digit multiplies the
/// remainder by ten as ten additions reduced modulo `den`, so no
/// intermediate exceeds `2 × den < 2^128`.
fn frac_digits(rest: i128, den: i128) -> i128 {
    let d = den.unsigned_abs();
    let mut rem = rest.unsigned_abs();
    let mut digits: i128 = 0;
    for _ in 0..crate::model::FIXED_DECIMALS {
        let mut q: i128 = 0;
        let mut r: u128 = 0;
        for _ in 0..10 {
            let sum = r + rem;
            if sum >= d {
                r = sum - d;
                q += 1;
            } else {
                r = sum;
            }
        }
        digits = digits * 10 + q;
        rem = r;
    }
    if rest < 0 {
        -digits
    } else {
        digits
    }
}

/// `a × b`, or `None` on overflow. Operands that fit `i64` (nearly all:
/// prices, sizes and their differences) take one widening multiply, which
/// cannot overflow; others use the checked `i128` multiply.
#[inline(always)]
fn mul(a: i128, b: i128) -> Option<i128> {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(x), Ok(y)) => Some(i128::from(x) * i128::from(y)),
        _ => a.checked_mul(b),
    }
}

/// Greatest common divisor (binary algorithm); `gcd(0, x) = x`.
pub(crate) fn gcd(mut a: u128, mut b: u128) -> u128 {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

/// The 256-bit product of two `u128`s as `(high, low)`.
fn wide_mul(x: u128, y: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (x1, x0) = (x >> 64, x & MASK);
    let (y1, y0) = (y >> 64, y & MASK);
    let p00 = x0 * y0;
    let p01 = x0 * y1;
    let p10 = x1 * y0;
    let p11 = x1 * y1;
    let mid = (p00 >> 64) + (p01 & MASK) + (p10 & MASK);
    let low = (p00 & MASK) | (mid << 64);
    let high = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    (high, low)
}

/// Compares `a × b` with `c × d` exactly.
#[cold]
pub(crate) fn cmp_products(a: i128, b: i128, c: i128, d: i128) -> Ordering {
    let sign = |x: i128, y: i128| (x.signum() * y.signum()) as i8;
    let (s1, s2) = (sign(a, b), sign(c, d));
    if s1 != s2 {
        return s1.cmp(&s2);
    }
    if s1 == 0 {
        return Ordering::Equal;
    }
    let m1 = wide_mul(a.unsigned_abs(), b.unsigned_abs());
    let m2 = wide_mul(c.unsigned_abs(), d.unsigned_abs());
    let magnitude = m1.cmp(&m2);
    if s1 > 0 {
        magnitude
    } else {
        magnitude.reverse()
    }
}
