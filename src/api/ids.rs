//! The API's prefixed ids (`pur_…`, `cus_…`): a UUID with a prefix saying
//! what it names, so an id pasted in the wrong place is caught.

use uuid::Uuid;

fn format(prefix: &str, id: Uuid) -> String {
    format!("{prefix}_{}", id.simple())
}

fn parse(prefix: &str, s: &str) -> Option<Uuid> {
    s.strip_prefix(prefix)?.strip_prefix('_').and_then(|u| Uuid::try_parse(u).ok())
}

pub fn purchase(id: Uuid) -> String {
    format("pur", id)
}
pub fn customer(id: Uuid) -> String {
    format("cus", id)
}
pub fn seat(id: Uuid) -> String {
    format("seat", id)
}
pub fn run(id: Uuid) -> String {
    format("run", id)
}
pub fn parse_purchase(s: &str) -> Option<Uuid> {
    parse("pur", s)
}
pub fn parse_run(s: &str) -> Option<Uuid> {
    parse("run", s)
}
pub fn parse_customer(s: &str) -> Option<Uuid> {
    parse("cus", s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_round_trip_and_refuse_the_wrong_prefix() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(super::parse_purchase(&super::purchase(id)), Some(id));
        assert_eq!(super::parse_purchase(&super::customer(id)), None);
        assert_eq!(super::parse_purchase("pur_nonsense"), None);
    }
}
