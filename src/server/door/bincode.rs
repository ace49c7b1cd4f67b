//! The ATMs' protocol (docs/PROTOCOL.md): bincode frames, a Hello/Welcome handshake, `Status`
//! codes.

use super::{FrontDoor, Inbound};
use crate::codec::{self, CodecError, FrameReader, FRAME_BYTES_LIMIT};
use crate::model::RequestId;
use crate::protocol::{
    Body, ClientMessage, Goodbye, Operation, Reply, ServerMessage, Status, Welcome,
    PROTOCOL_VERSION,
};
use crate::server::service::{Answer, AnswerBody, Command, Manage};
use crate::server::Bank;
use bytes::{Bytes, BytesMut};

/// The bincode protocol's door.
pub struct BincodeDoor {
    /// The largest frame body accepted.
    frame_bytes_max: usize,
    /// The Welcome frame, the same for every connection.
    welcome: Bytes,
}

/// What a bincode connection remembers: whether the handshake is done.
#[derive(Debug, Default)]
pub struct Handshake {
    /// True once a Hello was welcomed.
    greeted: bool,
}

impl BincodeDoor {
    /// The door for `bank`, announcing its limits in the Welcome.
    pub fn new(bank: &Bank) -> BincodeDoor {
        let limits = bank.limits();
        BincodeDoor::with_welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            requests_in_flight_max: limits.requests_in_flight_max as u32,
            request_window: crate::ledger::REQUEST_WINDOW as u32,
            frame_bytes_max: limits.frame_bytes_max.min(FRAME_BYTES_LIMIT) as u32,
            client_retention_secs: bank.client_retention().as_secs(),
        })
    }

    /// The door that answers every Hello with `welcome` and accepts frame bodies of up to its
    /// `frame_bytes_max`.
    pub fn with_welcome(welcome: Welcome) -> BincodeDoor {
        let frame_bytes_max = (welcome.frame_bytes_max as usize).min(FRAME_BYTES_LIMIT);
        let welcome = ServerMessage::Welcome(welcome);
        BincodeDoor {
            frame_bytes_max,
            welcome: Bytes::from(
                codec::encode_frame(&welcome).expect("a Welcome is a few bytes and always encodes"),
            ),
        }
    }

    fn hello(&self, state: &mut Handshake, protocol_version: u32) -> Inbound<()> {
        if state.greeted {
            return Inbound::Close("a second Hello on one connection".into());
        }
        if protocol_version != PROTOCOL_VERSION {
            return Inbound::Close(format!(
                "protocol version {protocol_version} is not supported; this server speaks {PROTOCOL_VERSION}"
            ));
        }
        state.greeted = true;
        Inbound::Answered(self.welcome.clone())
    }
}

impl FrontDoor for BincodeDoor {
    type Frames = FrameReader;
    type State = Handshake;
    type Context = ();

    fn frames(&self) -> FrameReader {
        FrameReader::new(self.frame_bytes_max)
    }

    fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    fn decode(&self, state: &mut Handshake, body: BytesMut) -> Inbound<()> {
        match codec::decode_wire::<ClientMessage>(&body) {
            Err(error) => Inbound::Close(format!("bad frame: {error}")),
            Ok(ClientMessage::Hello(hello)) => self.hello(state, hello.protocol_version),
            Ok(ClientMessage::Request(_)) if !state.greeted => {
                Inbound::Close("a request before the Hello".into())
            }
            Ok(ClientMessage::Request(request)) => Inbound::Request {
                id: request.id,
                name: request.operation.name(),
                command: command(request.operation),
                context: (),
            },
        }
    }

    fn encode_answer(&self, id: RequestId, (): (), answer: Answer) -> Result<Bytes, CodecError> {
        let body = match answer.body {
            AnswerBody::None => Body::Empty,
            AnswerBody::Balance(balance) => Body::Balance(balance),
            AnswerBody::Balances { ledger, available } => Body::Balances { ledger, available },
            AnswerBody::Hold {
                hold_id,
                ledger,
                available,
            } => Body::Hold {
                hold_id,
                ledger,
                available,
            },
            AnswerBody::Statement(movements) => Body::Statement(movements),
            AnswerBody::Account(details) => Body::Account(*details),
            AnswerBody::Text(text) => Body::Text(text),
            AnswerBody::Yes(yes) => Body::Answer(yes),
            AnswerBody::Moved(address) => Body::Moved {
                address: address.to_string(),
            },
        };
        let status = Status::from(answer.code);
        let reply = ServerMessage::Reply(Reply { id, status, body });
        codec::encode_frame(&reply).map(Bytes::from)
    }

    fn encode_goodbye(&self, reason: &str) -> Result<Bytes, CodecError> {
        let reason = reason.to_string();
        codec::encode_frame(&ServerMessage::Goodbye(Goodbye { reason })).map(Bytes::from)
    }
}

/// What an operation asks, in the service's terms.
fn command(operation: Operation) -> Command {
    match operation {
        Operation::CreateAccount {
            operator_token,
            card,
            holder,
            pin,
            initial_balance,
        } => Command::CreateAccount {
            operator_token,
            card,
            holder,
            pin,
            initial_balance,
        },
        Operation::Verify { card, pin } => Command::Verify { card, pin },
        Operation::ForCard {
            card,
            pin,
            operation,
        } => Command::ForCard {
            card,
            pin: Some(pin),
            terminal: None,
            then: Box::new(command(operation.on_verified_card())),
        },
        Operation::Balance => Command::Balance,
        Operation::Withdraw { amount } => Command::Withdraw { amount },
        Operation::Deposit { amount } => Command::Deposit { amount },
        Operation::Logout => Command::Logout,
        Operation::Lowercase { text } => Command::Lowercase { text },
        Operation::IsPrime { number } => Command::IsPrime { number },
        Operation::IsPalindrome { number } => Command::IsPalindrome { number },
        Operation::UnlockCard {
            operator_token,
            card,
        } => manage(operator_token, card, Manage::Unlock),
        Operation::ChangePin { old_pin, new_pin } => Command::ChangePin { old_pin, new_pin },
        Operation::Transfer { to, amount } => Command::Transfer { to, amount },
        Operation::PlaceHold { amount } => Command::PlaceHold { amount },
        Operation::CompleteHold { hold_id, amount } => Command::CompleteHold { hold_id, amount },
        Operation::VoidHold { hold_id } => Command::VoidHold { hold_id },
        Operation::Reverse {
            original,
            dispensed,
        } => Command::Reverse {
            original,
            dispensed,
        },
        Operation::Statement { count } => Command::Statement { count },
        Operation::FreezeAccount {
            operator_token,
            card,
        } => manage(operator_token, card, Manage::Freeze),
        Operation::UnfreezeAccount {
            operator_token,
            card,
        } => manage(operator_token, card, Manage::Unfreeze),
        Operation::CloseAccount {
            operator_token,
            card,
        } => manage(operator_token, card, Manage::Close),
        Operation::AccountInfo {
            operator_token,
            card,
        } => manage(operator_token, card, Manage::Info),
        Operation::SetLimits {
            operator_token,
            card,
            limits,
        } => manage(operator_token, card, Manage::SetLimits(limits)),
        Operation::ClearLimits {
            operator_token,
            card,
        } => manage(operator_token, card, Manage::ClearLimits),
        Operation::ReceiveTransfer {
            operator_token,
            from,
            leg,
            to,
            amount,
        } => Command::ReceiveTransfer {
            operator_token,
            from,
            leg,
            to,
            amount,
        },
    }
}

fn manage(operator_token: String, card: crate::model::Card, action: Manage) -> Command {
    Command::Manage {
        operator_token,
        card,
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Code;
    use crate::protocol::{Hello, Request};

    fn door() -> BincodeDoor {
        BincodeDoor::with_welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            requests_in_flight_max: 32,
            request_window: 32,
            frame_bytes_max: 64 * 1024,
            client_retention_secs: 86_400,
        })
    }

    fn body(message: &ClientMessage) -> BytesMut {
        BytesMut::from(&codec::encode_wire(message).unwrap()[..])
    }

    fn closed(inbound: Inbound<()>) -> String {
        match inbound {
            Inbound::Close(reason) => reason,
            _ => panic!("the connection should close"),
        }
    }

    const ID: RequestId = RequestId {
        client: 7,
        sequence: 1,
    };

    #[test]
    fn the_handshake_comes_first_and_once() {
        let door = door();
        let mut state = Handshake::default();
        let request = body(&ClientMessage::Request(Request {
            id: ID,
            operation: Operation::Balance,
        }));
        let hello = |protocol_version| body(&ClientMessage::Hello(Hello { protocol_version }));
        assert_eq!(
            closed(door.decode(&mut state, request.clone())),
            "a request before the Hello"
        );
        assert_eq!(
            closed(door.decode(&mut state, hello(9))),
            "protocol version 9 is not supported; this server speaks 2"
        );
        // The first protocol's clients know no available balance, holds or statements.
        assert_eq!(
            closed(door.decode(&mut state, hello(1))),
            "protocol version 1 is not supported; this server speaks 2"
        );
        assert!(matches!(
            door.decode(&mut state, hello(PROTOCOL_VERSION)),
            Inbound::Answered(_)
        ));
        assert!(matches!(
            door.decode(&mut state, request),
            Inbound::Request {
                id: ID,
                command: Command::Balance,
                name: "balance",
                context: (),
            }
        ));
        assert_eq!(
            closed(door.decode(&mut state, hello(PROTOCOL_VERSION))),
            "a second Hello on one connection"
        );
        assert!(
            closed(door.decode(&mut state, BytesMut::from(&[9u8][..]))).starts_with("bad frame: ")
        );
    }

    #[test]
    fn an_answer_is_the_reply_frame_of_its_status_and_body() {
        let answer = Answer {
            code: Code::InsufficientFunds,
            body: AnswerBody::Balance(9_700),
        };
        let reply = ServerMessage::Reply(Reply {
            id: ID,
            status: Status::InsufficientFunds,
            body: Body::Balance(9_700),
        });
        assert_eq!(
            door().encode_answer(ID, (), answer).unwrap(),
            codec::encode_frame(&reply).unwrap()
        );
    }
}
