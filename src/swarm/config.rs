//! What a run is asked to do: the mix of operations, when to stop, the servers and faults.

use super::*;

/// Acknowledged requests per ATM replayed in the audit. Each replay is preceded by a verify (a new
/// sequence number), so this stays well inside the server's window of remembered ids.
pub(super) const AUDIT_REPLAYS_PER_ATM: usize = 8;

/// Largest amount one withdrawal or deposit moves.
pub(super) const AMOUNT_MAX: Amount = 500;

/// Relative weights of the operations an ATM picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Withdrawals.
    pub withdraw: u32,
    /// Deposits.
    pub deposit: u32,
    /// Balance inquiries.
    pub balance: u32,
    /// Utilities (lowercase, prime, palindrome).
    pub utility: u32,
    /// Transfers to another card of the swarm (for a bench of transfers alone, `transfer=1`).
    pub transfer: u32,
    /// Holds placed (an ATM resolves its own holds later, or by `complete` and `void` picks).
    pub hold: u32,
    /// Completions of one of the ATM's open holds, sometimes for less than its amount.
    pub complete: u32,
    /// Voids of one of the ATM's open holds.
    pub void: u32,
    /// Reversals of the ATM's own latest withdrawal, in full or in part; one in four is a
    /// reversal of an id never sent, followed by that id's original (which must be refused).
    pub reverse: u32,
    /// Mini statements, each checked for consistency on arrival.
    pub statement: u32,
}

/// The mix's kinds as `--mix` names them, in the order they are drawn.
pub(super) const MIX_KINDS: [&str; 10] = [
    "withdraw",
    "deposit",
    "balance",
    "utility",
    "transfer",
    "hold",
    "complete",
    "void",
    "reverse",
    "statement",
];

impl Mix {
    /// A mix where nothing weighs anything.
    pub const NOTHING: Mix = Mix {
        withdraw: 0,
        deposit: 0,
        balance: 0,
        utility: 0,
        transfer: 0,
        hold: 0,
        complete: 0,
        void: 0,
        reverse: 0,
        statement: 0,
    };

    /// The weights in the order of [`MIX_KINDS`].
    pub(super) fn weights(&self) -> [u32; 10] {
        [
            self.withdraw,
            self.deposit,
            self.balance,
            self.utility,
            self.transfer,
            self.hold,
            self.complete,
            self.void,
            self.reverse,
            self.statement,
        ]
    }

    /// The weight of the kind named `kind` (one of [`MIX_KINDS`]), to be set.
    fn weight_mut(&mut self, kind: &str) -> Option<&mut u32> {
        Some(match kind {
            "withdraw" => &mut self.withdraw,
            "deposit" => &mut self.deposit,
            "balance" => &mut self.balance,
            "utility" => &mut self.utility,
            "transfer" => &mut self.transfer,
            "hold" => &mut self.hold,
            "complete" => &mut self.complete,
            "void" => &mut self.void,
            "reverse" => &mut self.reverse,
            "statement" => &mut self.statement,
            _ => return None,
        })
    }

    /// All the weights together.
    pub(super) fn total(&self) -> u32 {
        self.weights().iter().sum()
    }
}

impl Default for Mix {
    /// Mostly cash, with every banking operation in modest amounts.
    fn default() -> Self {
        Mix {
            withdraw: 40,
            deposit: 30,
            balance: 10,
            utility: 4,
            transfer: 6,
            hold: 3,
            complete: 2,
            void: 2,
            reverse: 2,
            statement: 1,
        }
    }
}

impl std::fmt::Display for Mix {
    /// The mix as `--mix` takes it, every kind named.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = MIX_KINDS
            .iter()
            .zip(self.weights())
            .map(|(kind, weight)| format!("{kind}={weight}"))
            .collect();
        formatter.write_str(&parts.join(","))
    }
}

impl FromStr for Mix {
    type Err = String;

    /// Parses `withdraw=W,deposit=W,...` (missing kinds weigh 0; the kinds are the fields).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut mix = Mix::NOTHING;
        for (key, value) in crate::faults::key_values(text, "mix")? {
            let weight: u32 = value
                .parse()
                .map_err(|_| format!("mix {key}: {value:?} is not a whole number"))?;
            let Some(slot) = mix.weight_mut(key) else {
                return Err(format!(
                    "unknown mix kind {key:?} ({})",
                    MIX_KINDS.join(", ")
                ));
            };
            *slot = weight;
        }
        let sum: u64 = mix.weights().iter().map(|weight| u64::from(*weight)).sum();
        if sum == 0 {
            return Err("the mix weighs nothing".into());
        }
        if sum > u64::from(u32::MAX) {
            return Err(format!(
                "the mix's weights add up to more than {}",
                u32::MAX
            ));
        }
        Ok(mix)
    }
}

/// When the swarm stops sending new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations (acknowledged or not) in all.
    Operations(u64),
}

/// Everything a swarm run needs.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// The server; `None` starts one in this process on a temporary data directory.
    pub server: Option<String>,
    /// Operator token used to create the accounts.
    pub operator_token: String,
    /// Concurrent ATMs.
    pub atms: usize,
    /// Accounts to create and use.
    pub accounts: usize,
    /// Opening balance of each account.
    pub initial_balance: Amount,
    /// Operation weights.
    pub mix: Mix,
    /// Zipf exponent over accounts; 0 is uniform.
    pub skew: f64,
    /// Operations an ATM does on one card (after one verification) before it picks the next.
    pub operations_per_card: u32,
    /// Send each operation on a card as a `ForCard` request, the card and its PIN with it,
    /// instead of a `Verify` and then the operation on the verified card (the ATM's own
    /// connection only; a switch's lines and the ISO 8583 door have their own ways).
    pub pin_with_each: bool,
    /// When to stop.
    pub stop: Stop,
    /// Seed for every random choice (and the client-side faults).
    pub seed: u64,
    /// Client-side faults: `drop-request`, `drop-reply`.
    pub client_faults: FaultPlan,
    /// Server-side faults for the in-process server.
    pub server_faults: Option<FaultPlan>,
    /// A shell command that runs the server (used with `chaos_restart`).
    pub server_command: Option<String>,
    /// SIGKILL and restart the server command on this period.
    pub chaos_restart: Option<Duration>,
    /// The shortest time one attempt waits for a reply before the client retries (the client
    /// library's [`ClientConfig::attempt_timeout`]; above it the wait adapts to the server).
    pub attempt_timeout: Duration,
    /// How long a request may keep being retried before its outcome counts as unknown.
    pub outcome_deadline: Duration,
    /// Called about once a second with the operations acknowledged so far (for progress display).
    pub progress: Option<ProgressCallback>,
    /// A load ramp: numbers of ATMs, rising, one step each; empty for a run at `atms` ATMs.
    /// Each step adds ATMs to the ones already running and lasts `ramp_step`; `atms` and
    /// `stop` are then ignored, and the report gives each step's goodput and latency.
    pub ramp: Vec<usize>,
    /// How long one ramp step lasts (a time, or operations started in the step).
    pub ramp_step: Stop,
    /// Speak TLS to the server (every client of the run, the audit's included); `None` for plain
    /// TCP. The in-process server speaks plain TCP, so this is for a `server` given.
    pub tls: Option<TlsSettings>,
    /// The door the load goes through: the bank's own protocol, or ISO 8583 (accounts are
    /// created, and the audit reads them, over the bank's protocol either way).
    pub front_door: FrontDoor,
    /// The ISO 8583 door of a `server` given (`host:port`); the in-process server opens its own.
    pub iso8583_address: Option<String>,
    /// How the ATMs make PIN blocks for the ISO 8583 door of a `server` given: under its zone PIN
    /// key, or in clear for a door started with clear blocks. The in-process server's door uses
    /// [`SWARM_ZONE_PIN_KEY`].
    pub iso8583_pins: Option<PinBlocks>,
    /// Switch mode (`src/swarm/switch.rs`): this many connections, each carrying `in_flight`
    /// terminals whose requests are pipelined on it. `None` (the default) runs `atms` ATMs, each
    /// with a connection of its own and one request in flight, and ignores `in_flight`. In switch
    /// mode `atms` is ignored (the terminals are `connections * in_flight`).
    pub connections: Option<usize>,
    /// Terminals per switch connection, so requests in flight on it at once [default:
    /// [`IN_FLIGHT_DEFAULT`], the server's default `requests_in_flight_max`].
    pub in_flight: usize,
}

/// The zone PIN key of the in-process server's ISO 8583 door: a fixed test key, known to the
/// swarm's terminals only.
pub const SWARM_ZONE_PIN_KEY: &str = "0123456789ABCDEF FEDCBA9876543210";

/// Which of the server's doors the load goes through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FrontDoor {
    /// The bank's own length-prefixed bincode protocol.
    #[default]
    Bincode,
    /// ISO 8583: each ATM a terminal on its own connection.
    Iso8583,
}

impl FromStr for FrontDoor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "bincode" => Ok(FrontDoor::Bincode),
            "iso8583" => Ok(FrontDoor::Iso8583),
            other => Err(format!(
                "unknown front door {other:?} (expected bincode or iso8583)"
            )),
        }
    }
}

impl std::fmt::Display for FrontDoor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            FrontDoor::Bincode => "bincode",
            FrontDoor::Iso8583 => "iso8583",
        })
    }
}

impl SwarmConfig {
    /// A small default run against `server` (or an in-process one).
    pub fn new(server: Option<String>) -> Self {
        SwarmConfig {
            server,
            operator_token: "swarm-operator-token-2c8e4a6f1d3b9075".into(),
            atms: 64,
            accounts: 100,
            initial_balance: 1_000_000,
            mix: Mix::default(),
            skew: 0.0,
            operations_per_card: 1,
            pin_with_each: false,
            stop: Stop::After(Duration::from_secs(10)),
            seed: 1,
            client_faults: FaultPlan::default(),
            server_faults: None,
            server_command: None,
            chaos_restart: None,
            attempt_timeout: crate::client::ATTEMPT_TIMEOUT_FLOOR_DEFAULT,
            outcome_deadline: Duration::from_secs(30),
            progress: None,
            ramp: Vec::new(),
            ramp_step: Stop::After(Duration::from_secs(10)),
            tls: None,
            front_door: FrontDoor::Bincode,
            iso8583_address: None,
            iso8583_pins: None,
            connections: None,
            in_flight: IN_FLIGHT_DEFAULT,
        }
    }
}

/// A callback that sees the number of acknowledged operations about once a second, and once more
/// when the load ends.
#[derive(Clone)]
pub struct ProgressCallback(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for ProgressCallback {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ProgressCallback")
    }
}

/// Parses durations like `10s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Where the swarm writes its outputs, if anywhere.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// The JSON summary.
    pub json: Option<PathBuf>,
    /// Charts.
    pub plots: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_and_durations_parse() {
        let mix: Mix = "withdraw=3,deposit=1".parse().unwrap();
        assert_eq!((mix.withdraw, mix.deposit, mix.balance), (3, 1, 0));
        assert!("withdraw=0".parse::<Mix>().is_err());
        assert!("steal=1".parse::<Mix>().is_err());
        let banking: Mix = "transfer=2,hold=1,complete=1,void=1,reverse=1,statement=1"
            .parse()
            .unwrap();
        assert_eq!(
            (banking.withdraw, banking.transfer, banking.statement),
            (0, 2, 1)
        );
        assert_eq!(
            Mix::default().to_string().parse::<Mix>(),
            Ok(Mix::default())
        );
        assert!(format!("withdraw={},deposit=1", u32::MAX)
            .parse::<Mix>()
            .is_err());
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
    }
}
