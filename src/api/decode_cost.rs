//! What decoding a protobuf message will cost in memory, read off its wire bytes first.
//!
//! A message's decoded form can be far larger than its wire form: an empty map entry is two
//! bytes on the wire and a few hundred in memory (a key, a `TensorProto`, a tree node), an empty
//! string in a repeated field two bytes and 64 (a `Bytes` handle, doubled by vector growth).
//! [`DecodeCost`] walks the wire bytes with the schema, without decoding, and adds up an upper
//! bound on what prost will allocate, so the request's memory budget is charged before decoding.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

/// prost's own nesting limit; deeper messages fail to decode anyway.
const MAX_DEPTH: u32 = 100;

/// Vectors grow by doubling, so a repeated field may hold twice its elements' bytes.
const GROWTH: usize = 2;

/// How one field is stored once decoded.
#[derive(Clone, Copy, Debug)]
enum Field {
    /// A number or bool of `size` bytes in memory; `wire` is its fixed wire width (0 = varint).
    Scalar { size: usize, wire: usize, repeated: bool },
    /// `string`: its bytes are copied.
    Text { repeated: bool },
    /// `bytes`: borrowed from the receive buffer, only a handle is allocated.
    Blob { repeated: bool },
    /// A message, walked in turn; map entries are messages too.
    Message { plan: usize, repeated: bool, map: bool },
}

/// A `BTreeMap` leaf holds 11 entries and is allocated whole with the map's first entry.
const MAP_LEAF: usize = 11;

/// One message type: its in-memory size and its fields by number.
#[derive(Debug, Default)]
struct Plan {
    /// Bytes of the decoded struct itself.
    size: usize,
    /// Fields by number, sorted.
    fields: Vec<(u32, Field)>,
}

impl Plan {
    fn field(&self, number: u32) -> Option<Field> {
        self.fields.binary_search_by_key(&number, |(n, _)| *n).ok().map(|i| self.fields[i].1)
    }
}

/// Cost plans for every message type of a descriptor pool, and the input type of every method.
#[derive(Debug, Default)]
pub struct DecodeCost {
    /// Plans, indexed by the numbers in [`Field::Message`].
    plans: Vec<Plan>,
    /// Plan of each message type, by full name.
    by_name: HashMap<String, usize>,
    /// Plan of each method's request, by gRPC path (`/package.Service/Method`).
    by_path: BTreeMap<String, usize>,
    /// The most any wire byte can cost once decoded, over every type: bounds small messages
    /// without walking them.
    per_wire_byte: usize,
}

/// Messages whose bound (`len` x the worst cost per wire byte) is below this are charged that
/// bound without a walk: a few KB of request, a few hundred KB of budget for a moment.
const WALK_ABOVE: usize = 1 << 20;

impl DecodeCost {
    /// Plans for every message and method in `pool`.
    pub fn new(pool: &DescriptorPool) -> DecodeCost {
        let mut cost = DecodeCost::default();
        for message in pool.all_messages() {
            cost.plan_of(&message, &mut Vec::new());
        }
        for service in pool.services() {
            for method in service.methods() {
                let plan = cost.plan_of(&method.input(), &mut Vec::new());
                cost.by_path.insert(format!("/{}/{}", service.full_name(), method.name()), plan);
            }
        }
        cost.per_wire_byte =
            cost.plans.iter().flat_map(|p| p.fields.iter()).map(|(_, f)| cost.per_byte(f)).max().unwrap_or(1);
        cost
    }

    /// The most one wire byte of field `f` can cost: each occurrence takes at least a tag and a
    /// length byte (2), a packed element at least one byte.
    fn per_byte(&self, f: &Field) -> usize {
        match *f {
            Field::Scalar { size, wire, .. } => size * GROWTH / wire.max(1),
            Field::Text { .. } => 24 * GROWTH / 2 + 1,
            Field::Blob { .. } => 32 * GROWTH / 2,
            Field::Message { plan, map: true, .. } => self.plans[plan].size * MAP_LEAF / 2 + 32,
            Field::Message { plan, repeated: true, .. } => self.plans[plan].size * GROWTH / 2 + 1,
            Field::Message { repeated: false, .. } => 1,
        }
    }

    /// Plans for tensorserve's own schemas.
    pub fn for_tensorserve() -> DecodeCost {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).expect("bundled descriptors decode");
        DecodeCost::new(&pool)
    }

    /// The request plan of the method at `path`, if it is one of ours.
    pub fn method(&self, path: &str) -> Option<usize> {
        self.by_path.get(path).copied()
    }

    /// The plan of a message type by full name (`tensorflow.TensorProto`).
    pub fn message(&self, full_name: &str) -> Option<usize> {
        self.by_name.get(full_name).copied()
    }

    /// An upper bound on the bytes decoding `chunks` (one message, in order) as `plan` allocates.
    /// Malformed input stops the walk; what was counted so far is returned (prost will refuse it).
    pub fn estimate(&self, plan: usize, chunks: &[Bytes]) -> usize {
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let bound = self.plans[plan].size.saturating_add(total.saturating_mul(self.per_wire_byte));
        if bound <= WALK_ABOVE {
            return bound;
        }
        self.walk_estimate(plan, chunks, total)
    }

    /// The walk itself: what decoding `chunks` allocates, field by field.
    fn walk_estimate(&self, plan: usize, chunks: &[Bytes], total: usize) -> usize {
        let mut cursor = Cursor { chunks, index: 0, offset: 0, pos: 0 };
        let mut cost = self.plans[plan].size;
        let _ = self.walk(&mut cursor, plan, total, 0, &mut cost);
        cost
    }

    fn walk(&self, c: &mut Cursor, plan: usize, end: usize, depth: u32, cost: &mut usize) -> Option<()> {
        // Map fields of this message instance that already have their first leaf.
        let mut maps_started: Vec<u32> = Vec::new();
        while c.pos < end {
            let key = c.varint()?;
            let number = u32::try_from(key >> 3).unwrap_or(u32::MAX);
            let field = self.plans[plan].field(number);
            let repeated_scalar = match field {
                Some(Field::Scalar { size, repeated: true, .. }) => size * GROWTH,
                _ => 0,
            };
            match key & 7 {
                0 => {
                    c.varint()?;
                    *cost += repeated_scalar;
                }
                1 => {
                    c.skip(8)?;
                    *cost += repeated_scalar;
                }
                5 => {
                    c.skip(4)?;
                    *cost += repeated_scalar;
                }
                2 => {
                    let len = usize::try_from(c.varint()?).ok()?;
                    let sub_end = c.pos.checked_add(len).filter(|e| *e <= end)?;
                    match field {
                        Some(Field::Scalar { size, wire, .. }) => {
                            // Packed: the element count is the byte count over the width, or the varint ends.
                            let count = match len.checked_div(wire) {
                                Some(n) => n,
                                None => c.count_varints(len)?,
                            };
                            *cost += count * size * GROWTH;
                        }
                        Some(Field::Text { repeated }) => *cost += len + if repeated { 24 * GROWTH } else { 0 },
                        Some(Field::Blob { repeated: true }) => *cost += 32 * GROWTH,
                        Some(Field::Message { plan: inner, map: true, .. }) if !maps_started.contains(&number) => {
                            maps_started.push(number);
                            *cost += self.plans[inner].size * MAP_LEAF + 64;
                            if depth >= MAX_DEPTH {
                                return None;
                            }
                            self.walk(c, inner, sub_end, depth + 1, cost)?;
                        }
                        Some(Field::Message { plan: inner, repeated, .. }) => {
                            if repeated {
                                // Map entries land in tree nodes: count them like vector slots.
                                *cost += self.plans[inner].size * GROWTH;
                            }
                            if depth >= MAX_DEPTH {
                                return None;
                            }
                            self.walk(c, inner, sub_end, depth + 1, cost)?;
                        }
                        Some(Field::Blob { repeated: false }) | None => {}
                    }
                    c.seek(sub_end)?;
                }
                // Groups (3, 4) are not in these schemas; prost refuses them, as any other wire type.
                _ => return None,
            }
        }
        Some(())
    }

    /// The plan index of `message`, built (with every type it reaches) on first use.
    fn plan_of(&mut self, message: &MessageDescriptor, building: &mut Vec<String>) -> usize {
        if let Some(&i) = self.by_name.get(message.full_name()) {
            return i;
        }
        let index = self.plans.len();
        self.plans.push(Plan::default());
        self.by_name.insert(message.full_name().to_string(), index);
        building.push(message.full_name().to_string());
        let mut fields = Vec::new();
        let mut size = 0;
        for f in message.fields() {
            let repeated = f.is_list() || f.is_map();
            let (field, inline) = match f.kind() {
                Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => (Field::Scalar { size: 8, wire: 8, repeated }, 8),
                Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => (Field::Scalar { size: 4, wire: 4, repeated }, 4),
                Kind::Int64 | Kind::Uint64 | Kind::Sint64 => (Field::Scalar { size: 8, wire: 0, repeated }, 8),
                Kind::Int32 | Kind::Uint32 | Kind::Sint32 | Kind::Enum(_) => {
                    (Field::Scalar { size: 4, wire: 0, repeated }, 4)
                }
                Kind::Bool => (Field::Scalar { size: 1, wire: 0, repeated }, 1),
                Kind::String => (Field::Text { repeated }, 24),
                Kind::Bytes => (Field::Blob { repeated }, 32),
                Kind::Message(m) => {
                    // A type still being planned is recursive: prost boxes it.
                    let recursive = building.iter().any(|n| n == m.full_name());
                    let inner = self.plan_of(&m, building);
                    let inline = if repeated || recursive { 8 } else { self.plans[inner].size + 8 };
                    (Field::Message { plan: inner, repeated, map: f.is_map() }, inline)
                }
            };
            size += if repeated { 24 } else { inline };
            fields.push((f.number(), field));
        }
        fields.sort_by_key(|(n, _)| *n);
        building.pop();
        self.plans[index] = Plan { size: size.next_multiple_of(8).max(8), fields };
        index
    }
}

/// Reads across the chunks of one message as if they were contiguous.
struct Cursor<'a> {
    chunks: &'a [Bytes],
    /// Current chunk.
    index: usize,
    /// Offset in the current chunk.
    offset: usize,
    /// Offset from the message start.
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        while self.index < self.chunks.len() && self.offset == self.chunks[self.index].len() {
            self.index += 1;
            self.offset = 0;
        }
        let b = *self.chunks.get(self.index)?.get(self.offset)?;
        self.offset += 1;
        self.pos += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// Moves `n` bytes on, handing each chunk's part to `visit`; `None` past the end.
    fn advance(&mut self, mut n: usize, mut visit: impl FnMut(&[u8])) -> Option<()> {
        while n > 0 {
            let chunk = self.chunks.get(self.index)?;
            let step = (chunk.len() - self.offset).min(n);
            visit(&chunk[self.offset..self.offset + step]);
            self.offset += step;
            self.pos += step;
            n -= step;
            if self.offset == chunk.len() {
                self.index += 1;
                self.offset = 0;
            }
        }
        Some(())
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.advance(n, |_| {})
    }

    fn seek(&mut self, to: usize) -> Option<()> {
        let n = to.checked_sub(self.pos)?;
        self.skip(n)
    }

    /// Varints in the next `n` bytes: the bytes without the continuation bit.
    fn count_varints(&mut self, n: usize) -> Option<usize> {
        let mut count = 0;
        self.advance(n, |part| count += part.iter().filter(|b| **b < 0x80).count())?;
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tensorflow as tf;
    use crate::proto::tensorflow::serving as pb;
    use prost::Message;

    fn estimate(cost: &DecodeCost, path: &str, wire: &[u8]) -> usize {
        let plan = cost.method(path).expect("a method of ours");
        // Split in odd places: the walk must not depend on chunk boundaries.
        let chunks: Vec<Bytes> = wire.chunks(7).map(Bytes::copy_from_slice).collect();
        let whole = cost.walk_estimate(plan, &[Bytes::copy_from_slice(wire)], wire.len());
        assert_eq!(cost.walk_estimate(plan, &chunks, wire.len()), whole);
        // The bound used for small messages is never below the walk.
        let bound = cost.plans[plan].size + wire.len() * cost.per_wire_byte;
        assert!(bound >= whole, "bound {bound} < walk {whole}");
        assert_eq!(cost.estimate(plan, &chunks), if bound <= WALK_ABOVE { bound } else { whole });
        whole
    }

    const PREDICT: &str = "/tensorflow.serving.PredictionService/Predict";

    #[test]
    fn many_empty_map_entries_cost_far_more_than_their_wire_size() {
        let cost = DecodeCost::for_tensorserve();
        let mut request = pb::PredictRequest::default();
        for i in 0..1000 {
            request.inputs.insert(format!("{i}"), tf::TensorProto::default());
        }
        let wire = request.encode_to_vec();
        let estimate = estimate(&cost, PREDICT, &wire);
        let tensor = cost.plans[cost.message("tensorflow.TensorProto").unwrap()].size;
        assert!(tensor >= std::mem::size_of::<tf::TensorProto>(), "{tensor}");
        assert!(estimate > 1000 * tensor, "{estimate} for {} wire bytes", wire.len());
    }

    #[test]
    fn large_tensor_content_costs_nothing_beyond_the_wire() {
        let cost = DecodeCost::for_tensorserve();
        let tensor = tf::TensorProto { dtype: 1, tensor_content: vec![0u8; 1 << 20].into(), ..Default::default() };
        let request = pb::PredictRequest { inputs: [("x".to_string(), tensor)].into(), ..Default::default() };
        let estimate = estimate(&cost, PREDICT, &request.encode_to_vec());
        assert!(estimate < 8192, "{estimate}");
    }

    #[test]
    fn packed_and_repeated_values_are_counted() {
        let cost = DecodeCost::for_tensorserve();
        let tensor = tf::TensorProto {
            dtype: 9,
            int64_val: vec![1; 10_000],
            string_val: vec![Bytes::new(); 10_000],
            ..Default::default()
        };
        let request = pb::PredictRequest { inputs: [("x".to_string(), tensor)].into(), ..Default::default() };
        let estimate = estimate(&cost, PREDICT, &request.encode_to_vec());
        // 8 bytes per int64 and a 32-byte handle per string, each doubled for growth.
        assert!(estimate >= 10_000 * (16 + 64), "{estimate}");
        assert!(estimate < 10_000 * (16 + 64) + 8192, "{estimate}");
    }

    #[test]
    fn malformed_wire_bytes_end_the_walk_without_panicking() {
        let cost = DecodeCost::for_tensorserve();
        for wire in [&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f][..], &[0x12, 0x05, 0x0a], &[0xff; 11], &[0x0b]] {
            estimate(&cost, PREDICT, wire);
        }
        // Nesting past prost's limit stops the walk.
        let mut deep = Vec::new();
        for i in 0..200 {
            // VariantTensorDataProto.tensors (3) and TensorProto.variant_val (15), alternately.
            let mut outer = vec![if i % 2 == 1 { 0x1a } else { 0x7a }];
            prost::encoding::encode_varint(deep.len() as u64, &mut outer);
            outer.extend_from_slice(&deep);
            deep = outer;
        }
        let plan = cost.message("tensorflow.VariantTensorDataProto").unwrap();
        let len = deep.len();
        cost.walk_estimate(plan, &[Bytes::from(deep)], len);
    }

    #[test]
    fn a_map_entry_costs_a_whole_tree_leaf() {
        let cost = DecodeCost::for_tensorserve();
        let request =
            pb::PredictRequest { inputs: [("x".to_string(), tf::TensorProto::default())].into(), ..Default::default() };
        let estimate = estimate(&cost, PREDICT, &request.encode_to_vec());
        let entry = cost.plans[cost.message("tensorflow.serving.PredictRequest.InputsEntry").unwrap()].size;
        assert!(estimate >= MAP_LEAF * entry, "{estimate} < {MAP_LEAF} x {entry}");
    }
}
