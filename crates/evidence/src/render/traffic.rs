//! `CANARY_LB_DIFF_<ts>.txt`: the load balancer's configuration before and after each traffic
//! change, when it was applied and when (and whether) it was verified.

use canary_core::Millis;

use super::RunContext;

/// Whether a traffic change was read back from the load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Read back and matching; `observed` is the split as read (`canary 5 % / baseline 95 %`).
    Verified { at: Millis, observed: String },
    /// Could not be verified (after retries); `detail` says what was seen or what failed.
    Failed { at: Millis, detail: String },
    /// Not checked; `why` says why.
    NotChecked { why: String },
}

impl Verification {
    /// One line for people: `verified at … : canary 5 % / baseline 95 %`.
    pub fn describe(&self, ctx: &RunContext) -> String {
        match self {
            Verification::Verified { at, observed } => {
                format!("verified {}: {observed}", ctx.when(*at))
            }
            Verification::Failed { at, detail } => {
                format!("NOT VERIFIED {}: {detail}", ctx.when(*at))
            }
            Verification::NotChecked { why } => format!("not verified: {why}"),
        }
    }

    pub fn is_verified(&self) -> bool {
        matches!(self, Verification::Verified { .. })
    }
}

/// One traffic change, as the traffic provider described it before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficChange {
    /// `embedded`, `haproxy`, `nginx`, `command`.
    pub provider: String,
    pub from_percent: u8,
    pub to_percent: u8,
    /// Why: `step 1`, `promote`, `rollback`.
    pub why: String,
    /// The provider's `describe()` before and after the change.
    pub before: String,
    pub after: String,
    pub applied_at: Millis,
    pub verification: Verification,
}

/// The traffic split the run left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalTraffic {
    /// The canary's share after the final change.
    pub canary_percent: u8,
    pub verification: Verification,
}

/// The title and run lines the LB diff starts with.
pub fn lb_diff_header(ctx: &RunContext) -> String {
    ctx.header("CANARY LB DIFF — load balancer configuration before/after each traffic change")
}

/// The block for the `number`th (from 1) traffic change of the run.
pub fn lb_change_block(ctx: &RunContext, number: usize, c: &TrafficChange) -> String {
    let mut out = format!(
        "\n== change {number}: canary {} % -> {} % ({}) via {} ==\n",
        c.from_percent, c.to_percent, c.why, c.provider
    );
    out.push_str(&format!("applied   {}\n", ctx.when(c.applied_at)));
    out.push_str(&match &c.verification {
        Verification::Verified { at, observed } => {
            format!("verified  {}: {observed}\n", ctx.when(*at))
        }
        Verification::Failed { at, detail } => {
            format!("NOT VERIFIED {}: {detail}\n", ctx.when(*at))
        }
        Verification::NotChecked { why } => format!("verified  no: {why}\n"),
    });
    out.push_str("\nconfiguration ('-' before only, '+' after only, ' ' both):\n");
    for (mark, line) in line_diff(&c.before, &c.after) {
        out.push_str(&format!("{mark} {line}\n"));
    }
    out
}

/// The whole LB diff for `changes`: the header, then one block per change.
pub fn lb_diff(ctx: &RunContext, changes: &[TrafficChange]) -> String {
    let mut out = lb_diff_header(ctx);
    for (i, c) in changes.iter().enumerate() {
        out.push_str(&lb_change_block(ctx, i + 1, c));
    }
    out
}

/// How many change blocks an LB diff text holds.
pub fn count_changes(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("== change ")).count()
}

/// A line diff by longest common subsequence: `' '` for lines in both, `'-'` for lines only in
/// `before`, `'+'` for lines only in `after`. Very large inputs fall back to all of `before`
/// then all of `after`.
pub fn line_diff<'a>(before: &'a str, after: &'a str) -> Vec<(char, &'a str)> {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    if a.len().saturating_mul(b.len()) > 4_000_000 {
        return a
            .iter()
            .map(|l| ('-', *l))
            .chain(b.iter().map(|l| ('+', *l)))
            .collect();
    }
    // lcs[i][j] = LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len() + b.len());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(('-', a[i]));
            i += 1;
        } else {
            out.push(('+', b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| ('-', *l)));
    out.extend(b[j..].iter().map(|l| ('+', *l)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines_only() {
        let d = line_diff("a\nw 0\nc\n", "a\nw 5\nc\nd\n");
        assert_eq!(
            d,
            [
                (' ', "a"),
                ('-', "w 0"),
                ('+', "w 5"),
                (' ', "c"),
                ('+', "d")
            ]
        );
    }
}
