//! Money: a decimal amount in an ISO 4217 currency. Providers take minor
//! units with the currency's own exponent (cents for USD, none for JPY, three
//! digits for KWD), so an amount with more decimals than its currency has is
//! refused at the edge rather than rounded somewhere later.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Active ISO 4217 codes and their minor-unit exponents (ISO 4217 list one).
/// Codes without a minor unit in ISO (precious metals, XXX, XTS) are not money here.
#[rustfmt::skip]
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("AOA", 2), ("ARS", 2), ("AUD", 2), ("AWG", 2),
    ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2), ("BHD", 3), ("BIF", 0), ("BMD", 2),
    ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2), ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2),
    ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0),
    ("CNY", 2), ("COP", 2), ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0),
    ("DKK", 2), ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2),
    ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0), ("GTQ", 2),
    ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2),
    ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3), ("JPY", 0), ("KES", 2), ("KGS", 2),
    ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2),
    ("LBP", 2), ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2),
    ("MKD", 2), ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2),
    ("MXN", 2), ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2),
    ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2), ("PKR", 2),
    ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2), ("RWF", 0), ("SAR", 2),
    ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2), ("SHP", 2), ("SLE", 2), ("SOS", 2),
    ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2),
    ("TMT", 2), ("TND", 3), ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2),
    ("UGX", 0), ("USD", 2), ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2),
    ("VES", 2), ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XOF", 0), ("XPF", 0),
    ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

impl Currency {
    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point in this currency's minor unit.
    pub fn exponent(self) -> u8 {
        self.exponent
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .map(|i| Currency { code: CURRENCIES[i].0, exponent: CURRENCIES[i].1 })
            .map_err(|_| MoneyError::UnknownCurrency(code.to_owned()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not an ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("`{0}` is not a decimal amount")]
    NotANumber(String),
    #[error("an amount cannot be negative")]
    Negative,
    #[error("{currency} has {exponent} decimal place(s); `{amount}` has more")]
    TooPrecise { amount: String, currency: &'static str, exponent: u8 },
    #[error("the amount is too large")]
    TooLarge,
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(&'static str, &'static str),
}

/// A non-negative amount of one currency, exact to the currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Parses an amount as the API carries it: a decimal string such as "49.00".
    pub fn parse(amount: &str, currency: &str) -> Result<Money, MoneyError> {
        let currency: Currency = currency.parse()?;
        let trimmed = amount.trim();
        let valid_shape = !trimmed.is_empty()
            && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-')
            && trimmed == amount;
        let value = valid_shape
            .then(|| Decimal::from_str_exact(trimmed).ok())
            .flatten()
            .ok_or_else(|| MoneyError::NotANumber(amount.to_owned()))?;
        Money::new(value, currency).map_err(|e| match e {
            MoneyError::TooPrecise { currency, exponent, .. } => {
                MoneyError::TooPrecise { amount: amount.to_owned(), currency, exponent }
            }
            other => other,
        })
    }

    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        if amount.normalize().scale() > currency.exponent as u32 {
            return Err(MoneyError::TooPrecise {
                amount: amount.to_string(),
                currency: currency.code,
                exponent: currency.exponent,
            });
        }
        let mut amount = amount.abs();
        amount.rescale(currency.exponent as u32);
        if amount.mantissa() > i64::MAX as i128 {
            return Err(MoneyError::TooLarge);
        }
        Ok(Money { amount, currency })
    }

    pub fn zero(currency: Currency) -> Money {
        Money::from_minor(0, currency)
    }

    pub fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { amount: Decimal::new(minor.abs(), currency.exponent as u32), currency }
    }

    /// The amount in the currency's minor unit, as providers want it.
    pub fn minor_units(self) -> i64 {
        self.amount.mantissa() as i64
    }

    pub fn amount(self) -> Decimal {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn times(self, quantity: u32) -> Result<Money, MoneyError> {
        let minor = self.minor_units().checked_mul(quantity as i64).ok_or(MoneyError::TooLarge)?;
        Ok(Money::from_minor(minor, self.currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Money as the API writes it: `{"amount": "49.00", "currency": "USD"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Money, example = json!({"amount": "49.00", "currency": "USD"}))]
pub struct MoneyJson {
    /// A decimal string with no more decimals than the currency has.
    pub amount: String,
    /// An ISO 4217 code.
    pub currency: String,
}

impl From<Money> for MoneyJson {
    fn from(m: Money) -> Self {
        MoneyJson { amount: m.amount.to_string(), currency: m.currency.code.to_owned() }
    }
}

impl TryFrom<&MoneyJson> for Money {
    type Error = MoneyError;
    fn try_from(m: &MoneyJson) -> Result<Money, MoneyError> {
        Money::parse(&m.amount, &m.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn amounts_keep_their_currencys_minor_unit() {
        let usd = Money::parse("49", "USD").unwrap();
        assert_eq!((usd.minor_units(), usd.amount().to_string()), (4900, "49.00".into()));
        assert_eq!(Money::parse("49.5", "USD").unwrap().minor_units(), 4950);
        let jpy = Money::parse("1000", "JPY").unwrap();
        assert_eq!((jpy.minor_units(), jpy.amount().to_string()), (1000, "1000".into()));
        let kwd = Money::parse("1.005", "KWD").unwrap();
        assert_eq!(kwd.minor_units(), 1005);
        assert_eq!(MoneyJson::from(Money::from_minor(4900, "USD".parse().unwrap())).amount, "49.00");
    }

    #[test]
    fn more_decimals_than_the_currency_has_are_refused_not_rounded() {
        assert!(matches!(Money::parse("1.005", "USD"), Err(MoneyError::TooPrecise { exponent: 2, .. })));
        assert!(matches!(Money::parse("10.5", "JPY"), Err(MoneyError::TooPrecise { exponent: 0, .. })));
        // Trailing zeros say nothing more precise.
        assert_eq!(Money::parse("10.00", "JPY").unwrap().minor_units(), 10);
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(Money::parse("-1.00", "USD"), Err(MoneyError::Negative));
        assert_eq!(Money::parse("1.00", "XYZ"), Err(MoneyError::UnknownCurrency("XYZ".into())));
        assert_eq!(Money::parse("1.00", "usd"), Err(MoneyError::UnknownCurrency("usd".into())));
        for bad in ["", " 1", "1e3", "abc", "1.2.3", "0x10", "+1"] {
            assert!(matches!(Money::parse(bad, "USD"), Err(MoneyError::NotANumber(_))), "{bad:?}");
        }
        assert_eq!(Money::parse("99999999999999999999", "USD"), Err(MoneyError::TooLarge));
    }

    #[test]
    fn multiplying_by_a_quantity_stays_exact() {
        let seat = Money::parse("19.99", "EUR").unwrap();
        assert_eq!(seat.times(3).unwrap().amount().to_string(), "59.97");
        assert_eq!(Money::from_minor(i64::MAX, seat.currency()).times(2), Err(MoneyError::TooLarge));
    }
}
