//! The one traversal of a parsed PromQL expression, shared by the rewrites ([`crate::rewrite`])
//! and the analysis ([`crate::analyze`]).
//!
//! The child list is written once; the macro stamps a shared and a mutable walker out of it, so
//! a rewrite and an analysis cannot disagree about which nodes an expression has.

use promql_parser::parser::Expr;

/// Defines a walker visiting every node parents before children. `f` gets each node with the
/// context its parent handed down and returns the context for the node's children (`ctx` for
/// the root), so a visit can know what it is inside of — a subquery, a range — without a stack.
macro_rules! walker {
    ($(#[$doc:meta])* $name:ident, $($mutability:tt)?) => {
        $(#[$doc])*
        pub(crate) fn $name<C: Copy>(
            expr: &$($mutability)? Expr,
            ctx: C,
            f: &mut impl FnMut(&$($mutability)? Expr, C) -> C,
        ) {
            let ctx = f(expr, ctx);
            match expr {
                Expr::Aggregate(a) => {
                    $name(&$($mutability)? a.expr, ctx, f);
                    if let Some(p) = &$($mutability)? a.param {
                        $name(p, ctx, f);
                    }
                }
                Expr::Unary(u) => $name(&$($mutability)? u.expr, ctx, f),
                Expr::Binary(b) => {
                    $name(&$($mutability)? b.lhs, ctx, f);
                    $name(&$($mutability)? b.rhs, ctx, f);
                }
                Expr::Paren(p) => $name(&$($mutability)? p.expr, ctx, f),
                Expr::Subquery(s) => $name(&$($mutability)? s.expr, ctx, f),
                Expr::Call(c) => {
                    for arg in &$($mutability)? c.args.args {
                        $name(arg, ctx, f);
                    }
                }
                // A range selector's vector selector is part of the node, not a child.
                Expr::NumberLiteral(_)
                | Expr::StringLiteral(_)
                | Expr::VectorSelector(_)
                | Expr::MatrixSelector(_)
                | Expr::Extension(_) => {}
            }
        }
    };
}

walker!(
    /// Visits every node of `expr`, parents before children, handing each its parent's context.
    walk,
);
walker!(
    /// [`walk`] with mutable nodes: what the rewrites use.
    walk_mut,
    mut
);
