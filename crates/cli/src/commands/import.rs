//! `canary import kayenta`: a Kayenta canary configuration's Prometheus metrics as
//! `[[compare]]` sections and `[scoring]` (DESIGN §14), saying what could not be carried over.
//!
//! The JSON is read into typed structs (unknown fields ignored: Kayenta configurations carry
//! many); each metric becomes a [`Compare`] or a reason it was skipped, and every change or loss
//! is a note — at the top of the output and one line each on stderr. The TOML values are
//! written by the `toml` crate, so a query with quotes or backslashes reads back as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use canary_core::Escaped;
use canary_core::judge::{Effect, Scoring};
use canary_core::plan::{Direction, parse_effect};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Turn another canary analysis tool's configuration into canary.toml's `[[compare]]` sections.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  canary import kayenta my-app-canary.json >> canary.toml && canary validate -c canary.toml
  canary import kayenta my-app-canary.json -o compare.toml --marginal 75 --pass 95")]
pub struct ImportArgs {
    #[command(subcommand)]
    from: Source,
}

#[derive(clap::Subcommand)]
enum Source {
    Kayenta(KayentaArgs),
}

/// A Kayenta canary configuration (Spinnaker, Argo Rollouts): its Prometheus metrics as
/// [[compare]] sections, and its group weights as [scoring], printed as TOML to append to
/// canary.toml. Everything changed or not carried over is listed at the top of the output and on
/// stderr, one line each.
#[derive(clap::Args)]
#[command(after_help = KAYENTA_MAPPING)]
struct KayentaArgs {
    /// The canary configuration as JSON: Kayenta's `GET /canaryConfig/ID`, or the JSON of
    /// Spinnaker's canary config editor.
    config: PathBuf,
    /// Write the TOML to this file instead of stdout (atomically; an existing file only with
    /// --force).
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Overwrite the --out file if it exists.
    #[arg(long)]
    force: bool,
    /// [scoring] marginal: a score below it rolls back. Kayenta takes it from the execution
    /// request, not the config. Default: classifier.scoreThresholds if the config has it, else
    /// none (canary's 75, as Kayenta's).
    #[arg(long, value_name = "SCORE")]
    marginal: Option<f64>,
    /// [scoring] pass: from this score on the comparisons pass. Default as for --marginal
    /// (canary's 95, as Kayenta's).
    #[arg(long, value_name = "SCORE")]
    pass: Option<f64>,
    /// The [run] evaluation_interval the comparisons will run at (canary init's: 30s). Each
    /// evaluation must be its own look, so longer range windows are shortened to it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = interval)]
    evaluation_interval: Duration,
}

const KAYENTA_MAPPING: &str = "\
Mapping (Kayenta → canary.toml):
  metric name                      name: lower case, [a-z0-9_], unique (a change is noted)
  query.type \"prometheus\":
    customInlineTemplate \"PromQL:E\"
                                   query = 'E'
    metricName, labelBindings and a filter (customFilterTemplate from `templates`,
    customFilter, or a customInlineTemplate without \"PromQL:\")
                                   query = 'avg(metricName{filter,labelBindings})', the query
                                   Kayenta builds; groupByFields, resourceType not carried
    a label matcher using ${scope}, ${location} or any ${...}
                                   dropped: canary adds each arm's selector itself
    ${...} anywhere else           the metric is skipped
    a range window longer than --evaluation-interval
                                   shortened to it: each evaluation is its own look
  any other store (atlas, datadog, stackdriver, signalfx, newrelic, wavefront, graphite,
  influxdb, ...)                   the metric is skipped
  analysisConfigurations.canary:
    direction                      direction (Kayenta's default: either)
    effectSize.allowedIncrease 1.1 effect = \"10%\" where an increase is bad
    effectSize.allowedDecrease 0.9 effect = \"10%\" where a decrease is bad; with either and
                                   two different allowances, the larger (noted)
    effectSize.criticalIncrease, criticalDecrease, measure \"cles\"
                                   not carried
    critical                       critical = true
    mustHaveData                   must_have_data = true (no data counts as failed)
    nanStrategy \"remove\"           what canary does (non-finite readings are skipped);
                                   \"replace\" is not carried
    outliers.strategy \"remove\"     not carried (the rank test keeps every reading)
  groups                           group = the first; more are noted
  classifier.groupWeights          [scoring.groups], for the groups of imported metrics
  --marginal, --pass (else classifier.scoreThresholds)
                                   [scoring] marginal, pass (default: omitted, canary's 75/95)

Kayenta reads every metric as a series of values (kind continuous here). A metric whose name or
query looks like an error rate gets a comment: kind = \"counts\" (events out of exposure)
judges sparse errors far better. Queries are unscoped: canary adds each arm's selector.

Exit codes: 0 imported, 1 error (nothing written).";

fn interval(text: &str) -> Result<Duration, String> {
    match canary_core::duration::parse(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("the evaluation interval must be longer than 0".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(args: ImportArgs) -> anyhow::Result<i32> {
    match args.from {
        Source::Kayenta(args) => kayenta(args),
    }
}

fn kayenta(args: KayentaArgs) -> anyhow::Result<i32> {
    if let Some(out) = &args.out
        && !args.force
        && out.exists()
    {
        return Err(already_exists(out));
    }
    let shown = args.config.display().to_string();
    let text = std::fs::read_to_string(&args.config).with_context(|| {
        format!("cannot read {shown}: give the path of a Kayenta canary config saved as JSON")
    })?;
    let config = parse_config(&text, &shown)?;
    let thresholds = Thresholds {
        marginal: args.marginal,
        pass: args.pass,
    };
    let import = Import::new(&config, thresholds, args.evaluation_interval)?;
    for note in &import.notes {
        eprintln!("note: {note}");
    }
    if import.compares.is_empty() {
        bail!(
            "nothing to import from {}: none of its {} metrics could become a [[compare]] (see the notes above); canary reads Prometheus queries — write [[compare]] sections by hand (canary init's template has a commented example)",
            Escaped(&shown),
            config.metrics.len()
        );
    }
    let toml = import.render(&shown)?;
    let summary = format!(
        "imported {} of {} Kayenta metrics as [[compare]] sections",
        import.compares.len(),
        config.metrics.len()
    );
    match &args.out {
        None => {
            crate::output::write_stdout_bytes(toml.as_bytes());
            eprintln!("{summary}");
        }
        Some(path) => {
            write_file(path, &toml, args.force)?;
            eprintln!(
                "{summary} into {}: append it to canary.toml, then `canary validate`",
                path.display()
            );
        }
    }
    Ok(0)
}

/// The configuration in `text`, or an error saying what to give instead.
fn parse_config(text: &str, shown: &str) -> anyhow::Result<KayentaConfig> {
    let shown = Escaped(shown);
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{shown} is not JSON ({e}): give a Kayenta canary config as JSON, e.g. from Kayenta's GET /canaryConfig/ID"
        )
    })?;
    let Some(object) = value.as_object() else {
        bail!(
            "{shown} is not a Kayenta canary config: it is not a JSON object; a canary config has \"metrics\", \"classifier\" and \"judge\""
        );
    };
    if !object
        .get("metrics")
        .is_some_and(serde_json::Value::is_array)
    {
        let hint = if object.contains_key("canaryConfig") {
            ": this looks like an execution request — save its \"canaryConfig\" object and import that"
        } else {
            ": a canary config has \"metrics\", \"classifier\" and \"judge\", e.g. from Kayenta's GET /canaryConfig/ID"
        };
        bail!("{shown} is not a Kayenta canary config: it has no \"metrics\" list{hint}");
    }
    // Typed from the text, not the value, so an error carries its line and column.
    let config: KayentaConfig = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{shown} is not a Kayenta canary config Kayenta would accept: {e}; fix that field"
        )
    })?;
    if config.metrics.is_empty() {
        bail!("{shown} has no metrics: there is nothing to import");
    }
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// Kayenta's canary configuration (CanaryConfig, CanaryMetricConfig, CanaryAnalysisConfiguration,
// PrometheusCanaryMetricSetQueryConfig), as far as an import reads it.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KayentaConfig {
    name: Option<String>,
    metrics: Vec<KayentaMetric>,
    templates: Option<BTreeMap<String, String>>,
    classifier: Option<Classifier>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KayentaMetric {
    name: Option<String>,
    /// Each store has its own query shape: read as Prometheus only once `type` says so.
    query: Option<serde_json::Value>,
    groups: Option<Vec<String>>,
    analysis_configurations: Option<AnalysisConfigurations>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrometheusQuery {
    resource_type: Option<String>,
    metric_name: Option<String>,
    label_bindings: Option<Vec<String>>,
    group_by_fields: Option<Vec<String>>,
    custom_filter: Option<String>,
    custom_inline_template: Option<String>,
    custom_filter_template: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AnalysisConfigurations {
    canary: Option<CanaryAnalysis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CanaryAnalysis {
    direction: Option<String>,
    nan_strategy: Option<String>,
    critical: Option<Lenient<bool>>,
    must_have_data: Option<Lenient<bool>>,
    effect_size: Option<EffectSize>,
    outliers: Option<Outliers>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EffectSize {
    allowed_increase: Option<Lenient<f64>>,
    allowed_decrease: Option<Lenient<f64>>,
    critical_increase: Option<Lenient<f64>>,
    critical_decrease: Option<Lenient<f64>>,
    measure: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Outliers {
    strategy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Classifier {
    group_weights: Option<BTreeMap<String, Lenient<f64>>>,
    score_thresholds: Option<ScoreThresholds>,
}

#[derive(Debug, Default, Deserialize)]
struct ScoreThresholds {
    pass: Option<Lenient<f64>>,
    marginal: Option<Lenient<f64>>,
}

/// A value Kayenta's judge also reads from its text form (`"true"`, `"1.1"`), as its
/// analysis configurations are untyped maps.
#[derive(Debug, Clone, Copy)]
struct Lenient<T>(T);

impl<'de, T: DeserializeOwned + std::str::FromStr> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form<T> {
            Value(T),
            Text(String),
        }
        match Form::<T>::deserialize(d)? {
            Form::Value(v) => Ok(Lenient(v)),
            Form::Text(s) => s.trim().parse().map(Lenient).map_err(|_| {
                serde::de::Error::custom(format!("{s:?} is not a {}", std::any::type_name::<T>()))
            }),
        }
    }
}

fn value<T: Copy>(v: &Option<Lenient<T>>) -> Option<T> {
    v.as_ref().map(|l| l.0)
}

// ---------------------------------------------------------------------------------------------
// The translation.

/// One `[[compare]]` section.
#[derive(Debug, Serialize)]
struct Compare {
    name: String,
    query: String,
    direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    effect: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    critical: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    must_have_data: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// Whether its name or query reads like an error rate (a comment suggests `kind = "counts"`).
    #[serde(skip)]
    looks_like_error_rate: bool,
}

/// `[scoring]`.
#[derive(Debug, Default, Serialize)]
struct ScoringSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    marginal: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    groups: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Thresholds {
    marginal: Option<f64>,
    pass: Option<f64>,
}

/// What an import made of a configuration.
#[derive(Debug)]
struct Import {
    config_name: Option<String>,
    compares: Vec<Compare>,
    scoring: ScoringSection,
    /// Where the thresholds came from, when there are any.
    thresholds_from: Option<&'static str>,
    /// Everything changed or not carried over, one line each, free text escaped.
    notes: Vec<String>,
}

impl Import {
    fn new(
        config: &KayentaConfig,
        flags: Thresholds,
        interval: Duration,
    ) -> anyhow::Result<Import> {
        let templates = config.templates.clone().unwrap_or_default();
        let mut notes = Vec::new();
        let mut compares: Vec<Compare> = Vec::new();
        for (i, metric) in config.metrics.iter().enumerate() {
            let label = match &metric.name {
                Some(n) => format!("metric {}", quoted(n)),
                None => format!("metric #{}", i + 1),
            };
            let mut said = Vec::new();
            match translate(metric, i, &templates, interval, &compares, &mut said) {
                Ok(compare) => compares.push(compare),
                // What would have changed in a metric that is skipped does not matter.
                Err(reason) => said = vec![format!("{reason}: skipped")],
            }
            notes.extend(said.into_iter().map(|n| format!("{label}: {n}")));
        }

        let mut scoring = ScoringSection::default();
        let groups_used: BTreeSet<&str> =
            compares.iter().filter_map(|c| c.group.as_deref()).collect();
        let classifier = config.classifier.as_ref();
        for (group, weight) in classifier
            .and_then(|c| c.group_weights.as_ref())
            .into_iter()
            .flatten()
        {
            let shown = quoted(group);
            if !(weight.0 >= 0.0 && weight.0.is_finite()) {
                notes.push(format!(
                    "classifier.groupWeights {shown} = {}: not a weight (0 or more): dropped",
                    weight.0
                ));
            } else if groups_used.contains(group.as_str()) {
                scoring.groups.insert(group.clone(), weight.0);
            } else {
                notes.push(format!(
                    "classifier.groupWeights {shown} = {}: no imported comparison is in that group: dropped",
                    weight.0
                ));
            }
        }

        let from_config = classifier.and_then(|c| c.score_thresholds.as_ref());
        let (thresholds, thresholds_from) = if flags.marginal.is_some() || flags.pass.is_some() {
            (flags, Some("--marginal/--pass"))
        } else if let Some(t) = from_config.filter(|t| t.pass.is_some() || t.marginal.is_some()) {
            let t = Thresholds {
                marginal: value(&t.marginal),
                pass: value(&t.pass),
            };
            (t, Some("classifier.scoreThresholds"))
        } else {
            (Thresholds::default(), None)
        };
        let defaults = Scoring::default();
        let check = Scoring {
            marginal: thresholds.marginal.unwrap_or(defaults.marginal),
            pass: thresholds.pass.unwrap_or(defaults.pass),
            group_weights: BTreeMap::new(),
        };
        if let Err(e) = check.check() {
            let default = |given: Option<f64>| {
                if given.is_some() {
                    ""
                } else {
                    " (canary's default)"
                }
            };
            bail!(
                "the score thresholds from {} are refused — marginal {}{}, pass {}{}: {e}; give 0 ≤ --marginal ≤ --pass ≤ 100",
                thresholds_from.unwrap_or("the defaults"),
                check.marginal,
                default(thresholds.marginal),
                check.pass,
                default(thresholds.pass)
            );
        }
        scoring.marginal = thresholds.marginal;
        scoring.pass = thresholds.pass;

        Ok(Import {
            config_name: config.name.clone(),
            compares,
            scoring,
            thresholds_from,
            notes,
        })
    }

    /// The TOML: a header naming the source and every note, then the sections.
    fn render(&self, source: &str) -> anyhow::Result<String> {
        let mut out = String::new();
        let name = match &self.config_name {
            Some(n) => format!(" (canary config {})", quoted(n)),
            None => String::new(),
        };
        out.push_str(&format!(
            "# Imported by `canary import kayenta` from {}{name}.\n",
            Escaped(source)
        ));
        let names: Vec<&str> = self.compares.iter().map(|c| c.name.as_str()).collect();
        out.push_str(&comment_wrapped(&format!(
            "Imported as [[compare]]: {}.",
            names.join(", ")
        )));
        if !self.scoring.groups.is_empty() {
            out.push_str("# Imported as [scoring.groups]: classifier.groupWeights.\n");
        }
        if let Some(from) = self.thresholds_from {
            out.push_str(&format!("# Imported as [scoring] marginal/pass: {from}.\n"));
        }
        out.push_str(
            "# Queries are unscoped: canary adds each arm's selector ([arms.*] selector) itself.\n\
             # Append this to canary.toml (merge [scoring] into one it already has), then run\n\
             # `canary validate`.\n",
        );
        if self.notes.is_empty() {
            out.push_str("# Everything was carried over.\n");
        } else {
            out.push_str("# Changed or not carried over:\n");
            for note in &self.notes {
                out.push_str(&format!("#   - {note}\n"));
            }
        }
        for compare in &self.compares {
            out.push('\n');
            if compare.looks_like_error_rate {
                out.push_str(&counts_hint(&compare.name));
            }
            #[derive(Serialize)]
            struct One<'a> {
                compare: [&'a Compare; 1],
            }
            out.push_str(&toml::to_string(&One { compare: [compare] })?);
        }
        let scoring = &self.scoring;
        if scoring.marginal.is_some() || scoring.pass.is_some() || !scoring.groups.is_empty() {
            #[derive(Serialize)]
            struct Section<'a> {
                scoring: &'a ScoringSection,
            }
            out.push('\n');
            out.push_str(&toml::to_string(&Section { scoring })?);
        }
        Ok(out)
    }
}

/// Free text from the configuration, quoted and escaped so that it stays on its line.
fn quoted(text: &str) -> String {
    format!("\"{}\"", Escaped(text))
}

/// `text` as `#` comment lines of at most about 100 characters.
fn comment_wrapped(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split(' ') {
        if line.len() > 1 && line.len() + 1 + word.len() > 100 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The comment on a comparison that reads like an error rate. The example is generic: the
/// counters to use are the team's call, not a guess from the ratio.
fn counts_hint(name: &str) -> String {
    let mut out = comment_wrapped(&format!(
        "{name} looks like an error rate or ratio. Kayenta reads it as a series of values; canary's kind = \"counts\" (events out of exposure, both cumulative counters) judges sparse errors far better, e.g.:"
    ));
    out.push_str(
        "#   kind = \"counts\"\n\
         #   events = 'sum(http_requests_total{code=~\"5..\"})'\n\
         #   exposure = 'sum(http_requests_total)'\n",
    );
    out
}

/// Whether a query adds up what the arm's instances do (`sum(rate(...))`, `count(...)`) with no
/// ratio: its value grows with the arm's share of traffic, so the canary's and the baseline's do
/// not compare.
fn scales_with_traffic(promql: &str) -> bool {
    let t = promql.trim_start();
    let sums = ["sum(", "sum by", "sum without", "count(", "count by"]
        .iter()
        .any(|p| t.starts_with(p));
    sums && !promql.contains('/')
}

/// One metric as a comparison, or why it cannot be one. `notes` gets what changed or was lost.
fn translate(
    metric: &KayentaMetric,
    index: usize,
    templates: &BTreeMap<String, String>,
    interval: Duration,
    taken: &[Compare],
    notes: &mut Vec<String>,
) -> Result<Compare, String> {
    let Some(query) = &metric.query else {
        return Err("it has no query".to_owned());
    };
    let store = ["type", "serviceType"]
        .iter()
        .find_map(|k| query.get(k).and_then(serde_json::Value::as_str))
        .map(str::to_owned);
    match store.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("prometheus") => {}
        Some(s) => {
            return Err(format!(
                "its store is {}, not Prometheus (canary reads PromQL)",
                Escaped(s)
            ));
        }
        None => return Err("its query names no store (\"type\")".to_owned()),
    }
    let query: PrometheusQuery = serde_json::from_value(query.clone())
        .map_err(|e| format!("its Prometheus query does not read as Kayenta's: {e}"))?;
    let promql = prometheus_query(&query, templates, interval, notes)?;
    if scales_with_traffic(&promql) {
        notes.push(
            "its query sums over the arm, so it scales with each arm's share of traffic (here the \
             baseline is production, 95 %, not a cluster the canary's size as Kayenta's): judge a \
             ratio (per request, per instance) instead, or the canary always reads lower"
                .to_owned(),
        );
    }

    let analysis = metric
        .analysis_configurations
        .as_ref()
        .and_then(|a| a.canary.as_ref());
    let default = CanaryAnalysis::default();
    let analysis = analysis.unwrap_or(&default);

    let direction = match analysis.direction.as_deref().map(str::trim) {
        None | Some("") => Direction::Either,
        Some(d) => match d.to_ascii_lowercase().parse::<Direction>() {
            Ok(d) => d,
            Err(_) => {
                notes.push(format!(
                    "direction {} is not Kayenta's (increase, decrease, either): imported as either, Kayenta's default",
                    quoted(d)
                ));
                Direction::Either
            }
        },
    };
    let effect = effect(direction, analysis.effect_size.as_ref(), notes);

    match analysis.nan_strategy.as_deref().map(str::trim) {
        None | Some("") => {}
        Some(s) if s.eq_ignore_ascii_case("remove") || s.eq_ignore_ascii_case("none") => {}
        Some(s) if s.eq_ignore_ascii_case("replace") => notes.push(
            "nanStrategy \"replace\" (missing values as 0) is not carried: canary skips readings that are not finite numbers".to_owned(),
        ),
        Some(s) => notes.push(format!(
            "nanStrategy {} is not carried: canary skips readings that are not finite numbers",
            quoted(s)
        )),
    }
    if let Some(strategy) = analysis
        .outliers
        .as_ref()
        .and_then(|o| o.strategy.as_deref())
        && !strategy.trim().eq_ignore_ascii_case("keep")
    {
        notes.push(format!(
            "outliers (strategy {}) is not carried: canary's rank test keeps every reading and is robust to outliers",
            quoted(strategy)
        ));
    }

    let groups = metric.groups.clone().unwrap_or_default();
    let group = groups.first().filter(|g| !g.trim().is_empty()).cloned();
    if groups.len() > 1 {
        let rest: Vec<String> = groups[1..].iter().map(|g| quoted(g)).collect();
        notes.push(format!(
            "in {} groups: a comparison is in one, the first ({}); not in {}",
            groups.len(),
            quoted(groups.first().map_or("", String::as_str)),
            rest.join(", ")
        ));
    }

    let original = metric.name.as_deref().unwrap_or("");
    let name = unique_name(original, index, taken);
    if name != original {
        notes.push(format!("named {name:?}"));
    }
    let looks_like_error_rate = reads_like_error_rate(original) || reads_like_error_rate(&promql);
    Ok(Compare {
        name,
        query: promql,
        direction: direction.as_str(),
        effect,
        critical: value(&analysis.critical).unwrap_or(false),
        must_have_data: value(&analysis.must_have_data).unwrap_or(false),
        group,
        looks_like_error_rate,
    })
}

/// The PromQL Kayenta would run for `query`, with its scope placeholders dropped and its range
/// windows at most `interval`; an error when it cannot be carried.
fn prometheus_query(
    query: &PrometheusQuery,
    templates: &BTreeMap<String, String>,
    interval: Duration,
    notes: &mut Vec<String>,
) -> Result<String, String> {
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let inline = nonempty(&query.custom_inline_template).map(|t| unescape(&t));
    let expression = match inline.as_deref().and_then(promql_prefix) {
        Some(expression) => expression.trim().to_owned(),
        None => {
            // Kayenta's other form: metricName{filter,labelBindings}, averaged.
            let filter = match (
                inline.clone(),
                nonempty(&query.custom_filter_template),
                nonempty(&query.custom_filter),
            ) {
                (Some(inline), _, _) => Some(inline),
                (None, Some(name), _) => match templates.get(&name) {
                    Some(t) => Some(unescape(t)),
                    None => {
                        return Err(format!(
                            "its customFilterTemplate {} is not in the config's templates",
                            quoted(&name)
                        ));
                    }
                },
                (None, None, custom) => custom.map(|c| unescape(&c)),
            };
            let Some(metric) = nonempty(&query.metric_name) else {
                return Err(
                    "it has neither a \"PromQL:\" customInlineTemplate nor a metricName".to_owned(),
                );
            };
            if filter.is_none()
                && let Some(resource) = nonempty(&query.resource_type)
            {
                notes.push(format!(
                    "resourceType {} (Kayenta's own scope and zone matchers) is not carried: canary scopes each arm with its selector",
                    quoted(&resource)
                ));
            }
            if let Some(fields) = query.group_by_fields.as_ref().filter(|f| !f.is_empty()) {
                notes.push(format!(
                    "groupByFields ({}) is not carried: a comparison reads one value per arm, so the query averages over them",
                    Escaped(&fields.join(", "))
                ));
            }
            let mut matchers: Vec<String> = Vec::new();
            if let Some(filter) = &filter {
                let items = split_outside(filter, ',')
                    .map_err(|e| format!("its filter {} does not read: {e}", quoted(filter)))?;
                matchers.extend(items.into_iter().map(|s| s.trim().to_owned()));
            }
            matchers.extend(
                query
                    .label_bindings
                    .iter()
                    .flatten()
                    .map(|b| unescape(b).trim().to_owned()),
            );
            matchers.retain(|m| !m.is_empty());
            if matchers.is_empty() {
                format!("avg({})", metric.trim())
            } else {
                format!("avg({}{{{}}})", metric.trim(), matchers.join(","))
            }
        }
    };

    let mut dropped = Vec::new();
    let mut shortened = Vec::new();
    let rewritten = rewrite_groups(&expression, |open, inner| match open {
        '{' => drop_placeholder_matchers(inner, &mut dropped),
        _ => shorten_window(inner, interval, &mut shortened),
    })
    .map_err(|e| {
        format!(
            "its query {} does not read as PromQL: {e}",
            quoted(&expression)
        )
    })?;
    if !dropped.is_empty() {
        notes.push(format!(
            "dropped the matcher{} {} (Kayenta's scope placeholders: canary adds each arm's selector itself; put back any fixed matcher you need)",
            if dropped.len() == 1 { "" } else { "s" },
            dropped
                .iter()
                .map(|d| Escaped(d).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(p) = placeholder(&rewritten) {
        return Err(format!(
            "its query uses the Kayenta placeholder {} outside a label matcher, which canary cannot fill",
            Escaped(p)
        ));
    }
    if !shortened.is_empty() {
        notes.push(format!(
            "range window{} {} shortened to [{}], the evaluation interval: each evaluation must be its own look (scrape the series several times per interval)",
            if shortened.len() == 1 { "" } else { "s" },
            shortened.join(", "),
            canary_core::duration::format(interval)
        ));
    }
    let expr = canary_promql::rewrite::parse(&rewritten).map_err(|e| {
        format!(
            "its query {} is not PromQL canary reads: {e}",
            quoted(&rewritten)
        )
    })?;
    let reach = canary_promql::analyze::reach(&expr);
    if reach > interval {
        return Err(format!(
            "its query {} reads {} back (a subquery or an offset), more than the evaluation interval ({}): successive evaluations would share samples",
            quoted(&rewritten),
            canary_core::duration::format(reach),
            canary_core::duration::format(interval)
        ));
    }
    Ok(rewritten)
}

/// The expression of a `PromQL:` inline template (Kayenta spells it so; any case is taken).
fn promql_prefix(template: &str) -> Option<&str> {
    let t = template.trim_start();
    let prefix = t.get(..7)?;
    prefix.eq_ignore_ascii_case("promql:").then(|| &t[7..])
}

/// Kayenta stores templates with `${` escaped as `$\{`.
fn unescape(template: &str) -> String {
    template.replace("$\\{", "${")
}

/// The first `${name...}` placeholder in `text`.
fn placeholder(text: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(at) = text[from..].find("${") {
        let start = from + at;
        let rest = &text[start + 2..];
        if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && let Some(end) = rest.find('}')
        {
            return Some(&text[start..start + 2 + end + 1]);
        }
        from = start + 2;
    }
    None
}

/// The matchers of one selector (`inner` of `{…}`) without those that use a placeholder,
/// pushed to `dropped`; `inner` unchanged when none does.
fn drop_placeholder_matchers(inner: &str, dropped: &mut Vec<String>) -> String {
    let Ok(items) = split_outside(inner, ',') else {
        return inner.to_owned();
    };
    if !items.iter().any(|i| placeholder(i).is_some()) {
        return inner.to_owned();
    }
    let mut kept = Vec::new();
    for item in items {
        if placeholder(item).is_some() {
            let item = item.trim().to_owned();
            if !dropped.contains(&item) {
                dropped.push(item);
            }
        } else if !item.trim().is_empty() {
            kept.push(item);
        }
    }
    kept.join(",").trim().to_owned()
}

/// A range (`inner` of `[…]`, not a subquery's) longer than `interval` becomes `interval`.
fn shorten_window(inner: &str, interval: Duration, shortened: &mut Vec<String>) -> String {
    if inner.contains(':') {
        return inner.to_owned();
    }
    match canary_core::duration::parse(inner) {
        Ok(d) if d > interval => {
            let window = format!("[{}]", inner.trim());
            if !shortened.contains(&window) {
                shortened.push(window);
            }
            canary_core::duration::format(interval)
        }
        _ => inner.to_owned(),
    }
}

/// Whether a metric's name or query reads like an error rate or ratio: one of its words (split
/// at anything but letters and digits, `_` included) names errors, failures, successes or a
/// ratio, or it matches 5xx status codes.
fn reads_like_error_rate(text: &str) -> bool {
    const WORDS: [&str; 13] = [
        "error",
        "errors",
        "err",
        "errs",
        "fail",
        "failed",
        "failure",
        "failures",
        "5xx",
        "4xx",
        "ratio",
        "success",
        "successful",
    ];
    let t = text.to_ascii_lowercase();
    t.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| WORDS.contains(&word))
        || ["=\"5", "=~\"5", "='5", "=~'5"]
            .iter()
            .any(|m| t.contains(m))
}

/// `name` made usable (lower case, `[a-z0-9_]`) and unique among `taken`.
fn unique_name(name: &str, index: usize, taken: &[Compare]) -> String {
    let mut base = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            base.push(c);
        } else if !base.ends_with('_') {
            base.push('_');
        }
    }
    let base = base.trim_matches('_');
    let base = if base.is_empty() {
        format!("metric_{}", index + 1)
    } else {
        base.to_owned()
    };
    let free = |n: &str| !taken.iter().any(|c| c.name == n);
    if free(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| free(n))
        .unwrap_or(base)
}

/// The allowed effect Kayenta's effect size gives for `direction`, as canary writes it.
fn effect(
    direction: Direction,
    size: Option<&EffectSize>,
    notes: &mut Vec<String>,
) -> Option<String> {
    let size = size?;
    for (key, v) in [
        ("criticalIncrease", value(&size.critical_increase)),
        ("criticalDecrease", value(&size.critical_decrease)),
    ] {
        if let Some(v) = v {
            notes.push(format!(
                "effectSize.{key} {v} is not carried: a critical comparison rolls back when it fails at its allowed effect"
            ));
        }
    }
    if let Some(measure) = size.measure.as_deref()
        && !measure.trim().eq_ignore_ascii_case("meanRatio")
    {
        notes.push(format!(
            "effectSize.measure {} is not carried, nor its allowances: canary's effect is a share of the baseline (Kayenta's meanRatio)",
            quoted(measure)
        ));
        return None;
    }
    // Each side's allowance as a share of the baseline.
    let up = value(&size.allowed_increase).and_then(|v| {
        if v >= 1.0 && v.is_finite() {
            Some(v - 1.0)
        } else {
            notes.push(format!(
                "effectSize.allowedIncrease {v} is not a multiplier of 1 or more: not carried"
            ));
            None
        }
    });
    let down = value(&size.allowed_decrease).and_then(|v| {
        if v > 0.0 && v <= 1.0 {
            Some(1.0 - v)
        } else {
            notes.push(format!(
                "effectSize.allowedDecrease {v} is not a multiplier above 0 and at most 1: not carried"
            ));
            None
        }
    });
    let share = match direction {
        Direction::Increase => up,
        Direction::Decrease => down,
        Direction::Either => match (up, down) {
            (None, None) => None,
            (Some(a), Some(b)) if percent(a) == percent(b) => Some(a),
            (a, b) => {
                // Kayenta's unset side is 1: no allowance.
                let (a, b) = (a.unwrap_or(0.0), b.unwrap_or(0.0));
                let larger = a.max(b);
                notes.push(format!(
                    "effectSize allows {}% more and {}% less; canary has one effect for both sides of either: took the larger, {}%",
                    percent(a),
                    percent(b),
                    percent(larger)
                ));
                Some(larger)
            }
        },
    }?;
    let text = format!("{}%", percent(share));
    // What the loader will read back must be accepted.
    match parse_effect(&text).map(|e| e.check(direction.into())) {
        Ok(Ok(Effect::Relative(_))) => Some(text),
        _ => {
            notes.push(format!(
                "the allowed effect {text} is out of range for direction {}: not carried",
                direction.as_str()
            ));
            None
        }
    }
}

/// A share as a percentage without floating-point dust (0.1 → 10).
fn percent(share: f64) -> f64 {
    (share * 100.0 * 1e6).round() / 1e6
}

// ---------------------------------------------------------------------------------------------
// PromQL text, read just enough to edit selectors and ranges without touching anything else.

/// `text` with the inside of every `{…}` and `[…]` (outside strings and comments) replaced by
/// what `group(open, inner)` returns. A `${…}` placeholder is one token, braces included.
fn rewrite_groups(
    text: &str,
    mut group: impl FnMut(char, &str) -> String,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((at, open)) = find_outside(rest, &['{', '['])? {
        let close = if open == '{' { '}' } else { ']' };
        out.push_str(&rest[..=at]);
        let inner_start = at + 1;
        let Some((len, _)) = find_outside(&rest[inner_start..], &[close])? else {
            return Err(format!("a {open} is not closed"));
        };
        let inner = group(open, &rest[inner_start..inner_start + len]);
        let named =
            out[..out.len() - 1].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':');
        if open == '{' && inner.is_empty() && named {
            // `metric{}` once its only matchers were dropped: the name alone.
            out.pop();
        } else {
            out.push_str(&inner);
            out.push(close);
        }
        rest = &rest[inner_start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `text` split at each `sep` outside strings, comments and placeholders.
fn split_outside(text: &str, sep: char) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let mut rest = text;
    while let Some((at, _)) = find_outside(rest, &[sep])? {
        items.push(&rest[..at]);
        rest = &rest[at + 1..];
    }
    items.push(rest);
    Ok(items)
}

/// The first of `targets` in `text` outside string literals, `#` comments and `${…}`
/// placeholders, with its byte offset.
fn find_outside(text: &str, targets: &[char]) -> Result<Option<(usize, char)>, String> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    let mut placeholder_end: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if let Some(end) = placeholder_end {
            if i <= end {
                continue;
            }
            placeholder_end = None;
        }
        if comment {
            comment = c != '\n';
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c == '$' && text[i..].starts_with("${") {
            match text[i..].find('}') {
                Some(end) => {
                    placeholder_end = Some(i + end);
                    continue;
                }
                None => return Err("a ${ is not closed".to_owned()),
            }
        }
        if targets.contains(&c) {
            return Ok(Some((i, c)));
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '#' => comment = true,
            _ => {}
        }
    }
    match quote {
        Some(q) => Err(format!("a string opened with {q} is not closed")),
        None => Ok(None),
    }
}

fn already_exists(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} already exists: pass --force to overwrite it, or --out another file",
        path.display()
    )
}

/// Writes `text` to `path` atomically (a temporary file next to it, then a rename); without
/// `force`, an existing file is refused and left as it was.
fn write_file(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    let refuse = || already_exists(path);
    if !force && path.exists() {
        return Err(refuse());
    }
    let Some(file_name) = path.file_name() else {
        bail!("--out {} does not name a file", path.display());
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.canary-import-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        if force {
            return std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot write {}", path.display()));
        }
        // A hard link never replaces a file: one created since the check above is kept too.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(refuse()),
            // A file system without hard links.
            Err(_) if !path.exists() => std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot write {}", path.display())),
            Err(_) => Err(refuse()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    written
}
