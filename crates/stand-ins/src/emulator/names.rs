//! The built-in lists seeded data is drawn from (names, departments, offices, companies,
//! places) and the small helpers that turn dice rolls into realistic values: ASCII mail
//! local parts, North American test phone numbers (555-01xx), postal addresses.

use super::model::PhysicalAddress;
use super::util::Dice;

pub(crate) const FIRST: &[&str] = &[
    "Adele",
    "Alex",
    "Allan",
    "Bianca",
    "Brian",
    "Cameron",
    "Christie",
    "Debra",
    "Diego",
    "Emily",
    "Enrico",
    "Grady",
    "Henrietta",
    "Irvin",
    "Isaiah",
    "Johanna",
    "Joni",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Patti",
    "Pradeep",
    "Raul",
    "Sakura",
    "Tomás",
    "Yuki",
    "Zoë",
    "Amara",
    "Chen",
    "Fatima",
    "Olu",
    "Priya",
    "Sven",
    "Ingrid",
    "Mateo",
    "Noor",
    "Kofi",
];
pub(crate) const LAST: &[&str] = &[
    "Vance",
    "Wilber",
    "Deyoung",
    "Pinto",
    "Johnson",
    "White",
    "Cline",
    "Berg",
    "Siciliani",
    "Braun",
    "Rossi",
    "Archie",
    "Gonzalez",
    "Sanders",
    "Lanier",
    "Holt",
    "Sherman",
    "Zhao",
    "Holloway",
    "Bowen",
    "Hernandez",
    "Polanski",
    "Wilkins",
    "Fernandes",
    "Gupta",
    "Razak",
    "Tanaka",
    "Müller",
    "O'Brien",
    "Nakamura",
    "Okafor",
    "Haddad",
    "Kowalski",
    "Lindqvist",
    "Costa",
    "Dubois",
    "Mensah",
    "Novak",
    "Singh",
    "Reyes",
];
pub(crate) const DEPARTMENTS: &[(&str, &[&str])] = &[
    (
        "Sales",
        &["Account Executive", "Sales Manager", "Sales Representative"],
    ),
    ("Support", &["Support Engineer", "Support Lead"]),
    (
        "Engineering",
        &[
            "Software Engineer",
            "Senior Software Engineer",
            "Engineering Manager",
        ],
    ),
    ("Finance", &["Accountant", "Financial Analyst"]),
    (
        "Marketing",
        &["Marketing Specialist", "Product Marketing Manager"],
    ),
    ("Human Resources", &["HR Generalist", "Recruiter"]),
    (
        "Operations",
        &["Operations Analyst", "Facilities Coordinator"],
    ),
    ("Legal", &["Paralegal", "Corporate Counsel"]),
];
pub(crate) const OFFICES: &[&str] = &[
    "Redmond B1 2105",
    "Seattle 4/1120",
    "London 3.14",
    "Berlin 2.07",
    "Singapore 12-04",
    "Remote",
];
const AREAS: &[&str] = &["425", "206", "312", "646", "415"];
pub(crate) const ROOMS: &[&str] = &[
    "Conference Room",
    "Reception",
    "Training Room",
    "Lab",
    "Front Desk",
];
pub(crate) const SHARED: &[&str] = &[
    "Company Contacts",
    "Sales Team",
    "Support Desk",
    "Accounts Payable",
];
pub(crate) const EXTERNAL: &[&str] = &[
    "fabrikam.com",
    "northwindtraders.com",
    "adatum.com",
    "litware.com",
];
pub(crate) const COMPANIES: &[&str] = &[
    "Fabrikam",
    "Northwind Traders",
    "Adventure Works",
    "Tailspin Toys",
    "Wingtip Toys",
    "Litware",
    "Woodgrove Bank",
    "Proseware",
    "Alpine Ski House",
    "Coho Winery",
    "Fourth Coffee",
    "Lucerne Publishing",
    "Trey Research",
    "Wide World Importers",
    "Blue Yonder Airlines",
    "Humongous Insurance",
];
pub(crate) const CONTACT_TITLES: &[&str] = &[
    "Purchasing Manager",
    "CEO",
    "Office Manager",
    "IT Director",
    "Consultant",
    "Buyer",
    "Project Lead",
    "Account Manager",
];
const PLACES: &[(&str, Option<&str>, &str, &str)] = &[
    ("Redmond", Some("WA"), "98052", "United States"),
    ("Chicago", Some("IL"), "60601", "United States"),
    ("London", None, "EC1A 1BB", "United Kingdom"),
    ("Berlin", None, "10115", "Germany"),
    ("Toronto", Some("ON"), "M5H 2N2", "Canada"),
    ("Sydney", Some("NSW"), "2000", "Australia"),
];
const STREETS: &[&str] = &[
    "Main Street",
    "Market Street",
    "High Street",
    "Harbour Road",
];

/// Lower-case ASCII for a mail local part ("Zoë O'Brien" → "zoe.obrien").
pub(crate) fn slug(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c.to_lowercase().next().unwrap_or(c) {
            'á' | 'à' | 'ä' | 'â' => Some('a'),
            'é' | 'è' | 'ë' | 'ê' => Some('e'),
            'í' | 'ï' => Some('i'),
            'ó' | 'ö' | 'ô' => Some('o'),
            'ú' | 'ü' => Some('u'),
            'ñ' => Some('n'),
            'ç' => Some('c'),
            c if c.is_ascii_alphanumeric() || c == '.' => Some(c),
            _ => None,
        })
        .collect()
}

pub(crate) fn phone(d: &mut Dice) -> String {
    format!("+1 {} 555 {:04}", d.pick(AREAS), 100 + d.below(100))
}

pub(crate) fn address(d: &mut Dice) -> PhysicalAddress {
    let (city, state, postal, country) = PLACES[d.below(PLACES.len())];
    PhysicalAddress {
        street: Some(format!("{} {}", 1 + d.below(400), d.pick(STREETS))),
        city: Some(city.into()),
        state: state.map(Into::into),
        country_or_region: Some(country.into()),
        postal_code: Some(postal.into()),
    }
}

/// `vec![make(d)]` with probability `p`, else empty: the shape of Graph's phone lists.
pub(crate) fn maybe_one(
    d: &mut Dice,
    p: f64,
    make: impl FnOnce(&mut Dice) -> String,
) -> Vec<String> {
    if d.unit() < p {
        vec![make(d)]
    } else {
        Vec::new()
    }
}
