//! The two arms of a canary release and their wire names.

use std::fmt;
use std::str::FromStr;

/// One side of the split. The wire names (`baseline`, `canary`) are used in metric labels, the
/// pin request header, the arm response header and the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arm {
    /// The version currently serving production (gets `100 - weight` percent).
    Baseline,
    /// The version under test (gets `weight` percent).
    Canary,
}

impl Arm {
    /// Both arms, baseline first; the order of per-arm arrays.
    pub const ALL: [Arm; 2] = [Arm::Baseline, Arm::Canary];

    /// The wire name: `baseline` or `canary`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline",
            Arm::Canary => "canary",
        }
    }

    /// The other arm.
    pub const fn other(self) -> Arm {
        match self {
            Arm::Baseline => Arm::Canary,
            Arm::Canary => Arm::Baseline,
        }
    }

    /// Position in per-arm arrays (`ALL` order).
    pub(crate) const fn index(self) -> usize {
        match self {
            Arm::Baseline => 0,
            Arm::Canary => 1,
        }
    }
}

impl fmt::Display for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text named neither arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an arm: expected `canary` or `baseline`")]
pub struct UnknownArm(pub String);

impl FromStr for Arm {
    type Err = UnknownArm;

    /// Accepts the wire names, ASCII case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("canary") {
            Ok(Arm::Canary)
        } else if s.eq_ignore_ascii_case("baseline") {
            Ok(Arm::Baseline)
        } else {
            Err(UnknownArm(s.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for arm in Arm::ALL {
            assert_eq!(arm.as_str().parse::<Arm>(), Ok(arm));
            assert_eq!(arm.other().other(), arm);
            assert_eq!(Arm::ALL[arm.index()], arm);
        }
        assert_eq!(" Canary ".parse::<Arm>(), Ok(Arm::Canary));
        assert!("stable".parse::<Arm>().is_err());
    }
}
