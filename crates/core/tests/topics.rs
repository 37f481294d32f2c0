//! What a notification is about: one type from the engine's actions through the notifiers'
//! subscriptions to the configuration's `on = [...]`, with one list of names.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a test failure

use canary_core::engine::Topic;

#[test]
fn every_topic_has_one_name_for_text_and_json() {
    assert_eq!(
        Topic::NAMES,
        ["start", "check", "breach", "rollback", "decision"]
    );
    for (topic, name) in Topic::ALL.iter().zip(Topic::NAMES) {
        assert_eq!(topic.as_str(), *name);
        assert_eq!(topic.to_string(), *name);
        assert_eq!(name.parse::<Topic>().unwrap(), *topic);
        assert_eq!(serde_json::to_string(topic).unwrap(), format!("\"{name}\""));
        assert_eq!(
            serde_json::from_str::<Topic>(&format!("\"{name}\"")).unwrap(),
            *topic
        );
    }
}

#[test]
fn an_unknown_topic_names_the_accepted_ones() {
    assert_eq!(
        "rolback".parse::<Topic>().unwrap_err().to_string(),
        "\"rolback\" is not one of start, check, breach, rollback, decision"
    );
}
