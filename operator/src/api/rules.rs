//! Validation the API server runs on ModelDeployments, for fields whose rules are more than
//! a range or a pattern: each refuses, at admission and naming the field, a spec the schema
//! would otherwise let through but that could never run.

use kube::core::{Message, Rule};
use modelfleet_contract::serve::OPERATOR_FLAGS;
use schemars::{Schema, SchemaGenerator, json_schema};

/// An image reference: `[registry[:port]/]path[:tag][@digest]`, the grammar of the
/// distribution project's `reference` package (lower-case path components; a tag of at most
/// 128 characters; a digest `algorithm:hex`).
pub const IMAGE_PATTERN: &str = concat!(
    r"^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)(\.([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?))*(:[0-9]+)?/)?",
    r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*",
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?",
    r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$",
);

/// The largest count a Deployment takes for `maxSurge` / `maxUnavailable` (an int32).
const MAX_COUNT: i64 = i32::MAX as i64;

/// `extraArgs` holds no flag of [`OPERATOR_FLAGS`] (the `serve` flags the operator sets from
/// the spec), as `--flag value` or `--flag=value`: the engine would take the last one,
/// silently overriding the field (or, for the ports, breaking the probes and the Service).
pub fn extra_args_rule() -> Rule {
    let names: Vec<&str> = OPERATOR_FLAGS
        .iter()
        .map(|f| f.trim_start_matches("--"))
        .collect();
    Rule::new(format!(
        "self.all(arg, !arg.matches('^--({})(=|$)'))",
        names.join("|")
    ))
    .message(Message::Message(format!(
        "spec.engine.extraArgs must not repeat a flag the operator sets ({}): set the matching \
         spec.engine field instead",
        OPERATOR_FLAGS.join(", ")
    )))
}

/// A Kubernetes quantity (an integer, or a string such as `500m`, `1.5` or `24Gi`) above 0.
pub fn positive_quantity_rule(field: &str) -> Rule {
    Rule::new(
        "type(self) == string ? isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) : self > 0",
    )
    .message(Message::Message(format!(
        "{field} must be a quantity greater than 0, such as 500m, 4, 1.5 or 24Gi"
    )))
}

/// A Deployment that may neither add a pod nor take one away can never replace a pod.
pub fn rollout_not_stuck_rule() -> Rule {
    Rule::new(format!(
        "!({} && {})",
        is_zero("self.maxSurge"),
        is_zero("self.maxUnavailable")
    ))
    .message(
        "spec.rollout: maxSurge and maxUnavailable must not both be 0, or no pod could ever be \
         replaced (maxSurge: 1 adds a new pod before removing an old one)",
    )
}

/// Whether an int-or-string field is 0 or `0%` (the percentage patterns allow no other
/// spelling of zero).
fn is_zero(field: &str) -> String {
    format!("(type({field}) == int ? {field} == 0 : {field} == '0%')")
}

/// `spec.rollout.maxSurge`: what a Deployment accepts and the Rust type decodes, no more: an
/// integer from 0 to 2147483647 or a percentage without leading zeros. Not nullable, so an
/// explicit `null` is dropped and the default applies.
pub fn max_surge_schema(_: &mut SchemaGenerator) -> Schema {
    int_or_percent_schema(
        "(0|[1-9][0-9]{0,8})%",
        "spec.rollout.maxSurge must be a count from 0 to 2147483647 or a percentage such as 25%",
    )
}

/// `spec.rollout.maxUnavailable`: as `maxSurge`, and a percentage at most 100%.
pub fn max_unavailable_schema(_: &mut SchemaGenerator) -> Schema {
    int_or_percent_schema(
        "(100|[1-9]?[0-9])%",
        "spec.rollout.maxUnavailable must be a count from 0 to 2147483647 or a percentage from 0% to 100%",
    )
}

fn int_or_percent_schema(percent: &str, message: &str) -> Schema {
    let rule = format!(
        "type(self) == int ? self >= 0 && self <= {MAX_COUNT} : self.matches('^{percent}$')"
    );
    json_schema!({
        "x-kubernetes-int-or-string": true,
        // Said outright, or kube's schema transform marks every optional int-or-string
        // nullable, and a stored `null` is what the Rust type cannot decode.
        "nullable": false,
        "x-kubernetes-validations": [{ "rule": rule, "message": message }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extra_args_rule_names_every_operator_flag() {
        let rule = extra_args_rule();
        for flag in OPERATOR_FLAGS {
            assert!(rule.rule.contains(flag.trim_start_matches("--")), "{flag}");
        }
    }

    #[test]
    fn zero_means_the_integer_or_zero_percent() {
        assert_eq!(
            is_zero("self.x"),
            "(type(self.x) == int ? self.x == 0 : self.x == '0%')"
        );
    }
}
