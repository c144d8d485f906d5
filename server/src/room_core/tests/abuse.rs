//! The room's abuse-resistance rules (issue 12), one test each, named
//! after what they pin: each failed on the code before its fix.

use super::*;

/// Finding 7: the read permission says events need write.
#[test]
fn read_only_members_cannot_send_named_events() {
    let mut room = room();
    room.join(1, true, false).unwrap();
    room.join(2, true, true).unwrap();
    room.frames(1);
    room.frames(2);
    room.deliver(1, emit("cursor", r#"{"at":3}"#, 7));
    assert_eq!(
        got(&mut room, 1),
        [
            Got::Error(u64::from(close::FORBIDDEN)),
            Got::EmitAck {
                ack: 7,
                delivered: 0
            }
        ]
    );
    assert_eq!(got(&mut room, 2), [], "nothing is relayed");
    assert!(room.is_member(1), "a read-only member stays");
}
