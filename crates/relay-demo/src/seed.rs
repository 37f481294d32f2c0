//! Seed data: the five runbook test users (`user_1`..`user_5`), a deterministic set of realistic
//! memories for each, and one secret marker per user that only its owner may ever receive — the
//! canary's isolation probes query for the other users' markers.

use sha2::{Digest, Sha256};

use crate::store::NewMemory;

/// Number of seeded users.
pub const SEED_USERS: usize = 5;
/// Default memories per seeded user.
pub const DEFAULT_MEMORIES_PER_USER: usize = 300;

/// The seeded user ids, `user_1`..`user_5`.
pub fn seed_users() -> Vec<String> {
    (1..=SEED_USERS).map(|n| format!("user_{n}")).collect()
}

/// The secret marker of `user_id`: `MARKER-<user_id>-<12 hex digits>`, deterministic.
pub fn marker_for(user_id: &str) -> String {
    let digest = Sha256::digest(format!("relay-demo/seed-marker/{user_id}").as_bytes());
    format!("MARKER-{user_id}-{}", &hex::encode(digest)[..12])
}

/// `(user_id, marker)` for every seeded user.
pub fn seed_markers() -> Vec<(String, String)> {
    seed_users()
        .into_iter()
        .map(|u| {
            let m = marker_for(&u);
            (u, m)
        })
        .collect()
}

/// The seed corpus: `per_user` memories for each seeded user, the first of which holds the
/// user's marker. Deterministic: the same call always yields the same memories.
pub fn seed_memories(per_user: usize) -> Vec<NewMemory> {
    let mut out = Vec::with_capacity(per_user * SEED_USERS);
    for (n, user) in seed_users().into_iter().enumerate() {
        let mut rng = SeedRng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1));
        if per_user > 0 {
            out.push(NewMemory {
                text: format!(
                    "Private vault note: my recovery reference is {}. Never share it with anyone.",
                    marker_for(&user)
                ),
                tags: vec!["secret".into(), "vault".into()],
                user_id: user.clone(),
            });
        }
        for _ in 1..per_user {
            let (text, tag) = memory_with_detail(&mut rng);
            out.push(NewMemory {
                user_id: user.clone(),
                text,
                tags: vec![tag.to_owned()],
            });
        }
    }
    out
}

/// `n` realistic queries against the seed corpus (deterministic): what a user of relay would ask
/// about their own memories. Used by benchmarks and load.
pub fn seed_queries(n: usize) -> Vec<String> {
    let mut rng = SeedRng(0x51ed_c0de_0000_0001);
    (0..n)
        .map(|_| match rng.below(10) {
            0 => format!("when is the trip to {}", rng.pick(&PLACES)),
            1 => format!("what does {} like to eat", rng.pick(&PEOPLE)),
            2 => format!("status of {}", rng.pick(&PROJECTS)),
            3 => format!("birthday in {}", rng.pick(&MONTHS)),
            4 => format!("how is {} going", rng.pick(&HOBBIES)),
            5 => format!("dentist appointment {}", rng.pick(&DAYS)),
            6 => format!("book recommendation {}", rng.pick(&BOOKS)),
            7 => format!("restaurant with {}", rng.pick(&FOODS)),
            8 => format!("money owed to {}", rng.pick(&PEOPLE)),
            _ => format!("{} checkpoint {}", rng.pick(&PROJECTS), rng.pick(&DAYS)),
        })
        .collect()
}

/// SplitMix64: a tiny, stable generator (the seed must not change with a dependency's version).
struct SeedRng(u64);

impl SeedRng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PEOPLE: [&str; 16] = [
    "my sister Ana",
    "my brother Tom",
    "Dr. Okafor",
    "my manager Priya",
    "grandma Rose",
    "my neighbour Luis",
    "coach Hendricks",
    "my friend Mei",
    "Aunt Carol",
    "my landlord",
    "the accountant",
    "my daughter Emma",
    "my son Jonah",
    "my partner Sam",
    "uncle Dev",
    "my mentor Hannah",
];
const PLACES: [&str; 16] = [
    "Lisbon",
    "Kyoto",
    "the lake house",
    "Denver",
    "the farmers market",
    "Oaxaca",
    "Copenhagen",
    "the climbing gym",
    "Vancouver",
    "the dentist on Elm Street",
    "Marrakesh",
    "the office",
    "Reykjavik",
    "the public library",
    "Buenos Aires",
    "the pottery studio",
];
const FOODS: [&str; 14] = [
    "oat milk flat whites",
    "spicy ramen",
    "dark chocolate",
    "mushroom risotto",
    "green tea",
    "sourdough bread",
    "pad thai",
    "lemon tart",
    "black coffee",
    "falafel wraps",
    "miso soup",
    "blueberry pancakes",
    "vegetable curry",
    "sparkling water",
];
const PROJECTS: [&str; 14] = [
    "the Postgres 16 migration",
    "the Q3 pricing review",
    "the mobile onboarding redesign",
    "the search latency work",
    "the billing service rewrite",
    "the SOC 2 audit",
    "the data warehouse cleanup",
    "the API rate limiter",
    "the holiday campaign",
    "the hiring plan",
    "the vendor contract renewal",
    "the customer churn analysis",
    "the on-call rotation",
    "the GPU capacity plan",
];
const HOBBIES: [&str; 14] = [
    "bouldering",
    "watercolour painting",
    "trail running",
    "learning Portuguese",
    "sourdough baking",
    "chess openings",
    "birdwatching",
    "playing the cello",
    "woodworking",
    "sea kayaking",
    "film photography",
    "gardening tomatoes",
    "yoga",
    "cycling",
];
const DAYS: [&str; 12] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "next week",
    "the first of the month",
    "the 14th",
    "the end of the quarter",
    "after the holidays",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const BOOKS: [&str; 10] = [
    "Project Hail Mary",
    "The Overstory",
    "Thinking in Systems",
    "Designing Data-Intensive Applications",
    "Piranesi",
    "The Left Hand of Darkness",
    "Atomic Habits",
    "Klara and the Sun",
    "The Pragmatic Programmer",
    "Braiding Sweetgrass",
];

/// A memory sentence, usually followed by a detail clause, so that a large corpus holds few exact
/// duplicates (real memories rarely repeat word for word).
fn memory_with_detail(rng: &mut SeedRng) -> (String, &'static str) {
    let (text, tag) = memory_text(rng);
    let person = rng.pick(&PEOPLE);
    let place = rng.pick(&PLACES);
    let month = rng.pick(&MONTHS);
    let day = rng.pick(&DAYS);
    let hobby = rng.pick(&HOBBIES);
    let number = rng.below(28) + 1;
    let detail = match rng.below(12) {
        0 => format!(" Noted on {month} {number}."),
        1 => format!(" Mentioned by {person}."),
        2 => format!(" Follow up {day}."),
        3 => format!(" Came up while talking about {hobby}."),
        4 => format!(" Remind me around {month}."),
        5 => format!(" Related to the visit to {place}."),
        6 => format!(" Priority {number} of 30 this month."),
        7 => format!(" {person} knows the details."),
        8 => format!(" Write it down before {day}."),
        9 => format!(" Heard this at {place} on {month} {number}."),
        _ => String::new(),
    };
    (format!("{text}{detail}"), tag)
}

fn memory_text(rng: &mut SeedRng) -> (String, &'static str) {
    let n = rng.below(20);
    let person = rng.pick(&PEOPLE);
    let place = rng.pick(&PLACES);
    let food = rng.pick(&FOODS);
    let project = rng.pick(&PROJECTS);
    let hobby = rng.pick(&HOBBIES);
    let day = rng.pick(&DAYS);
    let month = rng.pick(&MONTHS);
    let book = rng.pick(&BOOKS);
    let number = rng.below(28) + 1;
    match n {
        0 => (
            format!("Prefers {food} in the morning before meetings."),
            "preference",
        ),
        1 => (
            format!("Birthday of {person} is on {month} {number}; plan a gift."),
            "dates",
        ),
        2 => (
            format!("Trip to {place} planned for {month}; book flights early."),
            "travel",
        ),
        3 => (
            format!("Working on {project} with {person}; next checkpoint {day}."),
            "work",
        ),
        4 => (
            format!("Started {hobby} again and wants to keep it up twice a week."),
            "hobby",
        ),
        5 => (
            format!("Allergic to shellfish; always ask about {food} ingredients."),
            "health",
        ),
        6 => (
            format!("Reading {book}, about a third of the way through."),
            "reading",
        ),
        7 => (
            format!("Dentist appointment on {day} at {number} o'clock near {place}."),
            "health",
        ),
        8 => (
            format!("Promised {person} a call on {day} about {project}."),
            "todo",
        ),
        9 => (
            format!("Favourite restaurant in {place} serves great {food}."),
            "preference",
        ),
        10 => (
            format!("Budget for {project} is capped at {number}0 thousand dollars."),
            "work",
        ),
        11 => (
            format!("Wants to visit {place} with {person} in {month}."),
            "travel",
        ),
        12 => (
            format!("Gym membership renews on {month} {number}; consider cancelling."),
            "finance",
        ),
        13 => (
            format!("Takes vitamin D every day; doctor suggested it in {month}."),
            "health",
        ),
        14 => (
            format!("Recommended {book} to {person} last {day}."),
            "reading",
        ),
        15 => (
            format!("Parking spot at {place} is number {number}{number}."),
            "logistics",
        ),
        16 => (
            format!("Learned that {person} loves {food}; remember for dinner parties."),
            "people",
        ),
        17 => (
            format!("Weekly review of {project} moved to {day}."),
            "work",
        ),
        18 => (
            format!("Signed up for a {hobby} class in {place} starting {month}."),
            "hobby",
        ),
        _ => (
            format!("Owes {person} {number} dollars for the {food} last {day}."),
            "finance",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_unique_deterministic_and_named_after_their_user() {
        let markers = seed_markers();
        assert_eq!(markers.len(), 5);
        for (user, marker) in &markers {
            assert!(marker.starts_with(&format!("MARKER-{user}-")), "{marker}");
            assert_eq!(marker, &marker_for(user));
        }
        let mut distinct: Vec<_> = markers.iter().map(|(_, m)| m.clone()).collect();
        distinct.dedup();
        assert_eq!(distinct.len(), 5);
    }

    #[test]
    fn corpus_holds_each_marker_once_under_its_owner() {
        let corpus = seed_memories(50);
        assert_eq!(corpus.len(), 250);
        for (user, marker) in seed_markers() {
            let holders: Vec<_> = corpus.iter().filter(|m| m.text.contains(&marker)).collect();
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].user_id, user);
        }
        assert_eq!(seed_memories(50)[7].text, corpus[7].text);
    }
}
