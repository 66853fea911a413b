//! A bank account on an embedded SQLite file: deposits, withdrawals, an
//! overdraft rule enforced by the decider, idempotent commands, and a balance
//! read model built from the global event log.
//!
//! Run with `cargo run --example bank` (a fresh temporary database), or
//! `cargo run --example bank -- bank.db` to keep the file between runs.

#![allow(clippy::print_stdout)] // an example talks to its user

use std::collections::BTreeMap;

use eskit_codec::JsonCodec;
use eskit_core::{
    event::{GlobalCursor, Metadata, Principal, StreamName},
    handler::{CommandHandler, CommandOptions, Decider, HandleError, RetryPolicy},
    rt::block_on,
    store::{GlobalPager, ReadOptions},
    typed::{EventSchema, TypedStore},
};
use eskit_sqlite::SqliteStore;
use serde::{Deserialize, Serialize};

/// What happened to an account. Stored as JSON under the variant's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String, overdraft_limit: u64 },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}
eskit_codec::serde_domain_event!(AccountEvent);

/// What a customer asks for.
#[derive(Debug, Clone)]
enum AccountCommand {
    Open { owner: String, overdraft_limit: u64 },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

impl std::fmt::Display for AccountCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open {
                owner,
                overdraft_limit,
            } => write!(f, "open for {owner}, overdraft {overdraft_limit}"),
            Self::Deposit { amount } => write!(f, "deposit {amount}"),
            Self::Withdraw { amount } => write!(f, "withdraw {amount}"),
        }
    }
}

/// Why a command is refused.
#[derive(Debug, PartialEq)]
enum AccountError {
    NotOpen,
    AlreadyOpen,
    ZeroAmount,
    Overdraft {
        balance: i64,
        requested: u64,
        limit: u64,
    },
}

impl std::fmt::Display for AccountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotOpen => f.write_str("the account is not open"),
            Self::AlreadyOpen => f.write_str("the account is already open"),
            Self::ZeroAmount => f.write_str("the amount must be positive"),
            Self::Overdraft {
                balance,
                requested,
                limit,
            } => write!(
                f,
                "withdrawing {requested} from a balance of {balance} exceeds the overdraft limit of {limit}"
            ),
        }
    }
}

impl std::error::Error for AccountError {}

#[derive(Debug, Clone, Default, PartialEq)]
struct AccountState {
    open: bool,
    balance: i64,
    overdraft_limit: u64,
}

struct Account;

impl Decider for Account {
    type State = AccountState;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn initial_state(&self) -> AccountState {
        AccountState::default()
    }

    fn decide(
        &self,
        s: &AccountState,
        cmd: &AccountCommand,
    ) -> Result<Vec<AccountEvent>, AccountError> {
        match cmd {
            AccountCommand::Open { .. } if s.open => Err(AccountError::AlreadyOpen),
            AccountCommand::Open {
                owner,
                overdraft_limit,
            } => Ok(vec![AccountEvent::Opened {
                owner: owner.clone(),
                overdraft_limit: *overdraft_limit,
            }]),
            _ if !s.open => Err(AccountError::NotOpen),
            AccountCommand::Deposit { amount: 0 } | AccountCommand::Withdraw { amount: 0 } => {
                Err(AccountError::ZeroAmount)
            }
            AccountCommand::Deposit { amount } => {
                Ok(vec![AccountEvent::Deposited { amount: *amount }])
            }
            AccountCommand::Withdraw { amount } => {
                let after = i128::from(s.balance) - i128::from(*amount);
                if after < -i128::from(s.overdraft_limit) {
                    return Err(AccountError::Overdraft {
                        balance: s.balance,
                        requested: *amount,
                        limit: s.overdraft_limit,
                    });
                }
                Ok(vec![AccountEvent::Withdrawn { amount: *amount }])
            }
        }
    }

    fn evolve(&self, mut s: AccountState, event: &AccountEvent) -> AccountState {
        match event {
            AccountEvent::Opened {
                overdraft_limit, ..
            } => {
                s.open = true;
                s.overdraft_limit = *overdraft_limit;
            }
            AccountEvent::Deposited { amount } => s.balance += to_i64(*amount),
            AccountEvent::Withdrawn { amount } => s.balance -= to_i64(*amount),
        }
        s
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The balance read model: owner and balance per account, built by reading
/// every event in global order (what a subscription does continuously), and
/// the cursor it has read up to (what a checkpoint stores).
#[derive(Debug, Default, PartialEq)]
struct Balances {
    accounts: BTreeMap<String, (String, i64)>,
    applied: u64,
    cursor: GlobalCursor,
}

impl Balances {
    fn apply(&mut self, e: &eskit_core::event::RecordedEvent<AccountEvent>) {
        let entry = self
            .accounts
            .entry(e.stream.stream_id().to_string())
            .or_default();
        match &e.data {
            AccountEvent::Opened { owner, .. } => entry.0.clone_from(owner),
            AccountEvent::Deposited { amount } => entry.1 += to_i64(*amount),
            AccountEvent::Withdrawn { amount } => entry.1 -= to_i64(*amount),
        }
        self.applied += 1;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().nth(1);
    let path = match &keep {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::temp_dir().join(format!("eskit-bank-{}.db", std::process::id())),
    };
    let backend = SqliteStore::open(&path)?;
    let store = TypedStore::new(backend, EventSchema::new(JsonCodec));
    let bank = CommandHandler::builder(Account, store.clone())
        .with_conflict_retry(RetryPolicy::new(5)?)
        .build()?;
    println!("bank on {}", path.display());

    let alice = StreamName::new("account", "alice")?;
    let bob = StreamName::new("account", "bob")?;
    let teller = Metadata::new_chain(Principal::user("teller-7"));
    let commands = [
        (
            &alice,
            AccountCommand::Open {
                owner: "Alice".into(),
                overdraft_limit: 100,
            },
            "open-alice",
        ),
        (
            &bob,
            AccountCommand::Open {
                owner: "Bob".into(),
                overdraft_limit: 0,
            },
            "open-bob",
        ),
        (&alice, AccountCommand::Deposit { amount: 250 }, "dep-1"),
        (&bob, AccountCommand::Deposit { amount: 40 }, "dep-2"),
        (&alice, AccountCommand::Withdraw { amount: 300 }, "wd-1"),
        (&alice, AccountCommand::Withdraw { amount: 100 }, "wd-2"), // over the overdraft
        (&bob, AccountCommand::Withdraw { amount: 50 }, "wd-3"),    // Bob has no overdraft
        (&alice, AccountCommand::Deposit { amount: 250 }, "dep-1"), // a retried request
    ];
    for (account, cmd, request_id) in &commands {
        // The request id makes retries safe: the same key appends once.
        let opts = CommandOptions::new()
            .with_metadata(teller.clone())
            .with_idempotency_key(*request_id);
        let what = format!("{:<14} {request_id:<10} {cmd}", account.to_string());
        match block_on(bank.handle_with(account, cmd, &opts)) {
            Ok(done) if done.deduplicated => println!(
                "{what:<58} already done: balance {}, version {}",
                done.state.balance, done.version
            ),
            Ok(done) => println!(
                "{what:<58} ok: balance {}, version {}",
                done.state.balance, done.version
            ),
            Err(HandleError::Rejected(why)) => println!("{what:<58} refused: {why}"),
            Err(e) => return Err(e.into()),
        }
    }

    // Catch up with the log page by page, from the cursor the model holds,
    // asking the backend for the account events only.
    let mut balances = Balances::default();
    let schema = store.schema();
    let options = ReadOptions::new(balances.cursor, 100).with_event_types(schema.wire_names());
    let mut pager = GlobalPager::new(store.backend(), options);
    while let Some(page) = block_on(pager.next_page())? {
        for raw in page.events {
            if let Some(e) = schema.decode_if_mine(raw)? {
                balances.apply(&e);
            }
        }
        balances.cursor = page.next;
    }
    println!(
        "\nbalances after {} events (cursor {}):",
        balances.applied, balances.cursor
    );
    for (id, (owner, balance)) in &balances.accounts {
        println!("  {id:<8} {owner:<8} {balance:>6}");
    }
    if keep.is_none() {
        drop(bank);
        drop(store);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eskit_core::testing::DeciderTest;

    fn opened(limit: u64) -> AccountEvent {
        AccountEvent::Opened {
            owner: "A".into(),
            overdraft_limit: limit,
        }
    }

    #[test]
    fn the_overdraft_rule() -> Result<(), eskit_core::testing::SpecFailure> {
        DeciderTest::new(&Account)
            .given([opened(100), AccountEvent::Deposited { amount: 50 }])
            .when(AccountCommand::Withdraw { amount: 150 })
            .then_expect([AccountEvent::Withdrawn { amount: 150 }])?;
        DeciderTest::new(&Account)
            .given([opened(100), AccountEvent::Deposited { amount: 50 }])
            .when(AccountCommand::Withdraw { amount: 151 })
            .then_error_matches(|e| {
                *e == AccountError::Overdraft {
                    balance: 50,
                    requested: 151,
                    limit: 100,
                }
            })
    }

    #[test]
    fn accounts_must_be_open() -> Result<(), eskit_core::testing::SpecFailure> {
        DeciderTest::new(&Account)
            .when(AccountCommand::Deposit { amount: 1 })
            .then_error("not open")?;
        DeciderTest::new(&Account)
            .given([opened(0)])
            .when(AccountCommand::Open {
                owner: "B".into(),
                overdraft_limit: 0,
            })
            .then_error("already open")?;
        DeciderTest::new(&Account)
            .given([opened(0)])
            .when(AccountCommand::Deposit { amount: 0 })
            .then_error("positive")
    }

    #[test]
    fn the_read_model_sums_balances() {
        use eskit_core::testing::ProjectionTest;
        let apply = |mut b: Balances, e: &eskit_core::event::RecordedEvent<AccountEvent>| {
            b.apply(e);
            b
        };
        let mut expected = Balances::default();
        expected.accounts.insert("1".into(), ("A".into(), 30));
        expected.applied = 3;
        assert_eq!(
            ProjectionTest::new(Balances::default(), apply)
                .given([
                    opened(0),
                    AccountEvent::Deposited { amount: 50 },
                    AccountEvent::Withdrawn { amount: 20 },
                ])
                .then_expect(expected),
            Ok(())
        );
    }
}
