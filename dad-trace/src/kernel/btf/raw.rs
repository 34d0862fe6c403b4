//! The BTF format (include/uapi/linux/btf.h), read for the few questions dad-trace asks: a
//! named type's id, a member's offset along a dotted path (through anonymous structs and
//! unions), a type's size. One pass indexes where each type record starts; nothing else is
//! built, so reading the kernel's BTF costs little more than the file itself.
//!
//! Pure: mutation-tested (cargo xtask mutants).
use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

/// BTF kinds (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn of(raw: u32) -> Option<Kind> {
        const KINDS: [Kind; 19] = [
            Kind::Int,
            Kind::Ptr,
            Kind::Array,
            Kind::Struct,
            Kind::Union,
            Kind::Enum,
            Kind::Fwd,
            Kind::Typedef,
            Kind::Volatile,
            Kind::Const,
            Kind::Restrict,
            Kind::Func,
            Kind::FuncProto,
            Kind::Var,
            Kind::Datasec,
            Kind::Float,
            Kind::DeclTag,
            Kind::TypeTag,
            Kind::Enum64,
        ];
        KINDS.get(usize::try_from(raw).ok()?.checked_sub(1)?).copied()
    }

    /// Bytes that follow the 12-byte common record, for `vlen` entries.
    fn trailer(self, vlen: usize) -> usize {
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 12 * vlen,
            Kind::Enum | Kind::FuncProto => 8 * vlen,
            _ => 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not BTF (magic {0:#06x})")]
    Magic(u16),
    #[error("truncated or inconsistent BTF ({0})")]
    Layout(&'static str),
    #[error("unknown BTF kind {0} at type id {1}")]
    UnknownKind(u32, usize),
}

/// One type record.
#[derive(Clone, Copy, Debug)]
pub struct Type {
    pub kind: Kind,
    name_off: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` for sized kinds, the referenced type id for the others.
    size_or_ref: u32,
    /// Where the trailer starts, in the type section.
    trailer: usize,
}

/// Read BTF: the bytes and where each type record starts (ids from 1; 0 is void).
pub struct Btf {
    bytes: Vec<u8>,
    types: usize,
    strings: usize,
    strings_len: usize,
    starts: Vec<u32>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// Indexes little-endian BTF (every architecture dad-trace runs on).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, FormatError> {
        let magic = u16_at(&bytes, 0).ok_or(FormatError::Layout("header"))?;
        if magic != MAGIC {
            return Err(FormatError::Magic(magic));
        }
        let field = |at| {
            u32_at(&bytes, at)
                .map(|v| v as usize)
                .ok_or(FormatError::Layout("header"))
        };
        let header_len = field(4)?;
        let (type_off, type_len, str_off, str_len) = (field(8)?, field(12)?, field(16)?, field(20)?);
        if header_len < HEADER_LEN {
            return Err(FormatError::Layout("header length"));
        }
        let types = header_len + type_off;
        let strings = header_len + str_off;
        if types.checked_add(type_len).is_none_or(|end| end > bytes.len())
            || strings.checked_add(str_len).is_none_or(|end| end > bytes.len())
        {
            return Err(FormatError::Layout("sections past the end"));
        }
        let mut starts = vec![0];
        let mut at = 0;
        while at < type_len {
            let info = u32_at(&bytes, types + at + 4).ok_or(FormatError::Layout("type record"))?;
            let kind =
                Kind::of((info >> 24) & 0x1f).ok_or(FormatError::UnknownKind((info >> 24) & 0x1f, starts.len()))?;
            starts.push(u32::try_from(at).map_err(|_| FormatError::Layout("type section size"))?);
            at += 12 + kind.trailer((info & 0xffff) as usize);
        }
        if at != type_len {
            return Err(FormatError::Layout("type section end"));
        }
        Ok(Self {
            bytes,
            types,
            strings,
            strings_len: str_len,
            starts,
        })
    }

    /// How many type ids there are, void included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.starts.len() <= 1
    }

    #[must_use]
    pub fn get(&self, id: u32) -> Option<Type> {
        if id == 0 {
            return None;
        }
        let at = self.types + *self.starts.get(usize::try_from(id).ok()?)? as usize;
        let info = u32_at(&self.bytes, at + 4)?;
        Some(Type {
            kind: Kind::of((info >> 24) & 0x1f)?,
            name_off: u32_at(&self.bytes, at)?,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_ref: u32_at(&self.bytes, at + 8)?,
            trailer: at + 12,
        })
    }

    /// The string at `offset` in the string section.
    fn string(&self, offset: u32) -> &str {
        let start = self.strings + offset as usize;
        let end = self.strings + self.strings_len;
        let Some(slice) = self.bytes.get(start..end) else {
            return "";
        };
        let len = slice.iter().position(|&b| b == 0).unwrap_or(slice.len());
        std::str::from_utf8(&slice[..len]).unwrap_or("")
    }

    #[must_use]
    pub fn name(&self, ty: &Type) -> &str {
        self.string(ty.name_off)
    }

    /// The ids of the types named in `wanted` (of kind `kind`), in one pass.
    #[must_use]
    pub fn ids_of(&self, wanted: &[&str], kind: Kind) -> HashMap<String, u32> {
        let mut found = HashMap::new();
        for id in 1..self.starts.len() {
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            if let Some(ty) = self.get(id)
                && ty.kind == kind
            {
                let name = self.name(&ty);
                if wanted.contains(&name) && !found.contains_key(name) {
                    found.insert(name.to_string(), id);
                }
            }
        }
        found
    }

    /// Follows typedefs and qualifiers to the type they name.
    #[must_use]
    pub fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.get(id) {
                Some(ty)
                    if matches!(
                        ty.kind,
                        Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag
                    ) =>
                {
                    id = ty.size_or_ref;
                }
                _ => break,
            }
        }
        id
    }

    /// The size in bytes of a type, if it has one.
    #[must_use]
    pub fn size_of(&self, id: u32) -> Option<usize> {
        let ty = self.get(self.resolve(id))?;
        match ty.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float | Kind::Datasec => {
                Some(ty.size_or_ref as usize)
            }
            Kind::Ptr => Some(8),
            Kind::Array => {
                let element = u32_at(&self.bytes, ty.trailer)?;
                let count = u32_at(&self.bytes, ty.trailer + 8)? as usize;
                self.size_of(element)?.checked_mul(count)
            }
            _ => None,
        }
    }

    /// The members of a struct or union: (name, type id, bit offset).
    fn members(&self, id: u32) -> Vec<(&str, u32, u32)> {
        let Some(ty) = self.get(self.resolve(id)) else {
            return Vec::new();
        };
        if !matches!(ty.kind, Kind::Struct | Kind::Union) {
            return Vec::new();
        }
        (0..ty.vlen)
            .filter_map(|index| {
                let at = ty.trailer + 12 * index;
                let name = self.string(u32_at(&self.bytes, at)?);
                let member = u32_at(&self.bytes, at + 4)?;
                let offset = u32_at(&self.bytes, at + 8)?;
                // With kind_flag the low 24 bits are the bit offset (the rest a bitfield size).
                let bits = if ty.kind_flag { offset & 0x00ff_ffff } else { offset };
                Some((name, member, bits))
            })
            .collect()
    }

    /// Byte offset and type id of member `name` of a struct or union, looking through
    /// anonymous members as C does.
    fn member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let members = self.members(id);
        if let Some(&(_, member, bits)) = members.iter().find(|(n, _, _)| *n == name) {
            return (bits % 8 == 0).then_some((bits / 8, member));
        }
        members
            .iter()
            .filter(|(n, _, _)| n.is_empty())
            .find_map(|&(_, anonymous, bits)| {
                let (inner, member) = self.member(anonymous, name)?;
                (bits % 8 == 0).then_some((bits / 8 + inner, member))
            })
    }

    /// The return type and the parameter types of a function: a `Func`, or a typedef of a
    /// pointer to a function (a tracepoint's `btf_trace_*`). Type id 0 is `void`.
    #[must_use]
    pub fn prototype(&self, id: u32) -> Option<(u32, Vec<u32>)> {
        let ty = self.get(id)?;
        let proto_id = match ty.kind {
            Kind::Func => ty.size_or_ref,
            Kind::Typedef => {
                let pointer = self.get(self.resolve(id))?;
                if pointer.kind != Kind::Ptr {
                    return None;
                }
                self.resolve(pointer.size_or_ref)
            }
            _ => return None,
        };
        let proto = self.get(proto_id)?;
        if proto.kind != Kind::FuncProto {
            return None;
        }
        // Each parameter: name offset, type id.
        let params = (0..proto.vlen)
            .map(|index| u32_at(&self.bytes, proto.trailer + 8 * index + 4))
            .collect::<Option<Vec<u32>>>()?;
        Some((proto.size_or_ref, params))
    }

    /// The name of the struct (or forward-declared struct) `id` points to, through
    /// typedefs and qualifiers on either side of the pointer.
    #[must_use]
    pub fn pointee_struct(&self, id: u32) -> Option<&str> {
        let pointer = self.get(self.resolve(id))?;
        if pointer.kind != Kind::Ptr {
            return None;
        }
        let target = self.get(self.resolve(pointer.size_or_ref))?;
        matches!(target.kind, Kind::Struct | Kind::Fwd).then(|| self.name(&target))
    }

    /// How C writes type `id`, for messages: `struct inet6_ifaddr *`, `const char *`, `int`.
    #[must_use]
    pub fn spell(&self, id: u32) -> String {
        let mut out = String::new();
        self.spell_into(id, &mut out, 0);
        out
    }

    fn spell_into(&self, id: u32, out: &mut String, depth: usize) {
        let Some(ty) = self.get(id).filter(|_| depth < 16) else {
            out.push_str(if id == 0 { "void" } else { "?" });
            return;
        };
        let name = self.name(&ty);
        match ty.kind {
            Kind::Ptr => {
                self.spell_into(ty.size_or_ref, out, depth + 1);
                out.push_str(" *");
            }
            Kind::Const | Kind::Volatile | Kind::Restrict => {
                let qualifier = match ty.kind {
                    Kind::Const => "const",
                    Kind::Volatile => "volatile",
                    _ => "restrict",
                };
                // A qualified pointer takes the qualifier after its star: `char *const`.
                if self.get(ty.size_or_ref).is_some_and(|target| target.kind == Kind::Ptr) {
                    self.spell_into(ty.size_or_ref, out, depth + 1);
                    out.push_str(qualifier);
                } else {
                    out.push_str(qualifier);
                    out.push(' ');
                    self.spell_into(ty.size_or_ref, out, depth + 1);
                }
            }
            Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Fwd => {
                let keyword = match ty.kind {
                    Kind::Union => "union",
                    Kind::Enum | Kind::Enum64 => "enum",
                    // A forward declaration of a union has kind_flag set.
                    Kind::Fwd if ty.kind_flag => "union",
                    _ => "struct",
                };
                out.push_str(keyword);
                out.push(' ');
                out.push_str(if name.is_empty() { "(anonymous)" } else { name });
            }
            Kind::FuncProto => out.push_str("(function)"),
            Kind::TypeTag => self.spell_into(ty.size_or_ref, out, depth + 1),
            _ => out.push_str(if name.is_empty() { "?" } else { name }),
        }
    }

    /// Byte offset and type id of a dotted member path (`nd_net.net`) in a struct.
    #[must_use]
    pub fn offset_of(&self, id: u32, path: &str) -> Option<(u32, u32)> {
        let mut offset = 0;
        let mut current = id;
        for part in path.split('.') {
            let (inner, member) = self.member(current, part)?;
            offset += inner;
            current = member;
        }
        Some((offset, current))
    }
}

/// Hand-made BTF for tests.
#[cfg(test)]
pub(crate) mod builder {
    use super::{HEADER_LEN, MAGIC};

    /// Builds a little-endian BTF blob from type records (12-byte header + trailer each).
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let at = u32::try_from(self.strings.len()).expect("small");
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        }

        /// Appends a type record (`kind` as `BTF_KIND_*`); ids count from 1 in call order.
        pub(crate) fn record(&mut self, name: &str, kind: u32, vlen: u32, size_or_ref: u32, trailer: &[u32]) {
            let name = self.name(name);
            for word in [name, (kind << 24) | vlen, size_or_ref].iter().chain(trailer) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
        }

        pub(crate) fn member_words(&mut self, members: &[(&str, u32, u32)]) -> Vec<u32> {
            members
                .iter()
                .flat_map(|&(name, ty, bits)| [self.name(name), ty, bits])
                .collect()
        }

        /// The parameters of a `FUNC_PROTO`: (name, type id) each.
        pub(crate) fn param_words(&mut self, params: &[(&str, u32)]) -> Vec<u32> {
            params.iter().flat_map(|&(name, ty)| [self.name(name), ty]).collect()
        }

        pub(crate) fn build(self) -> Vec<u8> {
            let mut blob = Vec::new();
            blob.extend_from_slice(&MAGIC.to_le_bytes());
            blob.extend_from_slice(&[1, 0]);
            let header = u32::try_from(HEADER_LEN).expect("small");
            let types = u32::try_from(self.types.len()).expect("small");
            let strings = u32::try_from(self.strings.len()).expect("small");
            for word in [header, 0, types, types, strings] {
                blob.extend_from_slice(&word.to_le_bytes());
            }
            blob.extend_from_slice(&self.types);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{builder::Builder, *};

    fn sample() -> Btf {
        let mut b = Builder::new();
        b.record("int", 1, 0, 4, &[32]); // 1
        let inner = b.member_words(&[("x", 1, 32)]);
        b.record("inner", 4, 1, 8, &inner); // 2
        let outer = b.member_words(&[("a", 1, 0), ("", 4, 64), ("p", 5, 128)]);
        b.record("outer", 4, 3, 24, &outer); // 3
        let anonymous = b.member_words(&[("nested", 2, 0)]);
        b.record("", 4, 1, 8, &anonymous); // 4
        b.record("", 2, 0, 0, &[]); // 5: void *
        b.record("outer_t", 8, 0, 7, &[]); // 6
        b.record("", 10, 0, 3, &[]); // 7: const struct outer
        b.record("do_it", 12, 0, 9, &[]); // 8
        b.record("", 13, 0, 0, &[]); // 9
        b.record("", 3, 0, 0, &[1, 1, 4]); // 10: int[4]
        Btf::parse(b.build()).expect("valid BTF")
    }

    #[test]
    fn members_through_anonymous_structs_typedefs_and_qualifiers() {
        let btf = sample();
        assert_eq!(btf.len(), 11);
        let outer = btf.ids_of(&["outer"], Kind::Struct)["outer"];
        assert_eq!(btf.offset_of(outer, "a"), Some((0, 1)));
        assert_eq!(
            btf.offset_of(outer, "nested.x"),
            Some((12, 1)),
            "through the anonymous member"
        );
        assert_eq!(
            btf.offset_of(outer, "p").map(|(at, ty)| (at, btf.size_of(ty))),
            Some((16, Some(8)))
        );
        assert_eq!(btf.offset_of(outer, "missing"), None);
        let typedef = btf.ids_of(&["outer_t"], Kind::Typedef)["outer_t"];
        assert_eq!(btf.resolve(typedef), outer, "typedef -> const -> struct");
        assert_eq!(btf.offset_of(typedef, "nested.x"), Some((12, 1)));
        assert_eq!(btf.size_of(typedef), Some(24));
        assert_eq!(btf.size_of(10), Some(16), "int[4]");
        assert!(btf.ids_of(&["do_it"], Kind::Func).contains_key("do_it"));
        assert!(btf.ids_of(&["do_it"], Kind::Struct).is_empty(), "kinds are told apart");
    }

    #[test]
    fn bad_input_is_refused_not_trusted() {
        assert_eq!(Btf::parse(vec![0; 4]).err(), Some(FormatError::Magic(0)));
        assert!(Btf::parse(MAGIC.to_le_bytes().to_vec()).is_err());
        let mut b = Builder::new();
        b.record("int", 1, 0, 4, &[32]);
        let mut blob = b.build();
        blob.truncate(blob.len() - 3);
        assert_eq!(
            Btf::parse(blob).err(),
            Some(FormatError::Layout("sections past the end"))
        );
        let mut b = Builder::new();
        b.record("odd", 30, 0, 0, &[]);
        assert_eq!(Btf::parse(b.build()).err(), Some(FormatError::UnknownKind(30, 1)));
    }

    /// BTF kinds as the format numbers them; `KIND_FLAG` sets the info word's top bit.
    const INT: u32 = 1;
    const PTR: u32 = 2;
    const STRUCT: u32 = 4;
    const UNION: u32 = 5;
    const ENUM: u32 = 6;
    const FWD: u32 = 7;
    const TYPEDEF: u32 = 8;
    const VOLATILE: u32 = 9;
    const CONST: u32 = 10;
    const RESTRICT: u32 = 11;
    const FUNC_PROTO: u32 = 13;
    const TYPE_TAG: u32 = 18;
    const ENUM64: u32 = 19;
    const KIND_FLAG: u32 = 0x80;

    /// `built` (a [`Builder`] blob) laid out again: a `header_len`-byte header (the known
    /// fields, then zeros) and the string section before the type section, which ends the blob.
    fn strings_then_types(built: &[u8], header_len: usize) -> Vec<u8> {
        let field = |at| u32_at(built, at).expect("header") as usize;
        let (types_len, strings_len) = (field(12), field(20));
        let types = &built[HEADER_LEN..HEADER_LEN + types_len];
        let strings = &built[HEADER_LEN + types_len..][..strings_len];
        let mut blob = built[..4].to_vec();
        for word in [header_len, strings_len, types_len, 0, strings_len] {
            blob.extend_from_slice(&u32::try_from(word).expect("small").to_le_bytes());
        }
        blob.resize(header_len, 0);
        blob.extend_from_slice(strings);
        blob.extend_from_slice(types);
        blob
    }

    #[test]
    fn sections_are_found_where_the_header_puts_them() {
        let mut b = Builder::new();
        b.record("int", INT, 0, 4, &[32]);
        b.record("long", INT, 0, 8, &[64]);
        let built = b.build();
        // A newer kernel's longer header: the fields past the known ones are skipped.
        let btf = Btf::parse(strings_then_types(&built, 32)).expect("strings first, longer header");
        assert_eq!(btf.len(), 3);
        assert_eq!(btf.spell(2), "long", "the type section found past the strings");
        assert_eq!(btf.size_of(2), Some(8));
        let mut truncated = strings_then_types(&built, HEADER_LEN);
        truncated.pop();
        assert_eq!(
            Btf::parse(truncated).err(),
            Some(FormatError::Layout("sections past the end")),
            "the type section's last byte is missing"
        );
        let mut short = built;
        short[4..8].copy_from_slice(&16_u32.to_le_bytes());
        assert_eq!(
            Btf::parse(short).err(),
            Some(FormatError::Layout("header length")),
            "a header shorter than its own fields"
        );
    }

    #[test]
    fn void_alone_is_empty() {
        let btf = Btf::parse(Builder::new().build()).expect("no types is valid BTF");
        assert_eq!(btf.len(), 1);
        assert!(btf.is_empty());
        assert!(btf.get(1).is_none());
        assert!(!sample().is_empty());
    }

    #[test]
    fn records_decode_kind_and_kind_flag() {
        let mut b = Builder::new();
        b.record("sock", FWD, 0, 0, &[]); // 1
        b.record("bpf_attr", FWD | KIND_FLAG, 0, 0, &[]); // 2
        b.record("int", INT, 0, 4, &[32]); // 3
        // Bitfields: with kind_flag a member's offset word is (bit size << 24) | bit offset.
        let members = b.member_words(&[("low", 3, 4 << 24), ("high", 3, (4 << 24) | 32)]);
        b.record("flags", STRUCT | KIND_FLAG, 2, 8, &members); // 4
        let btf = Btf::parse(b.build()).expect("valid BTF");
        assert!(btf.get(0).is_none(), "0 is void, not a record");
        assert!(btf.get(5).is_none());
        let (sock, attr) = (btf.get(1).expect("sock"), btf.get(2).expect("bpf_attr"));
        assert_eq!((sock.kind, sock.kind_flag), (Kind::Fwd, false));
        assert_eq!((attr.kind, attr.kind_flag), (Kind::Fwd, true));
        assert_eq!(btf.name(&attr), "bpf_attr");
        assert_eq!(btf.get(4).map(|ty| (ty.kind, ty.kind_flag)), Some((Kind::Struct, true)));
        assert_eq!(
            btf.offset_of(4, "high"),
            Some((4, 3)),
            "the bit size is not part of the offset"
        );
    }

    #[test]
    fn types_are_spelled_as_c_writes_them() {
        let mut b = Builder::new();
        b.record("int", INT, 0, 4, &[32]); // 1
        b.record("char", INT, 0, 1, &[8]); // 2
        b.record("", CONST, 0, 2, &[]); // 3: const char
        b.record("", PTR, 0, 3, &[]); // 4: const char *
        b.record("", VOLATILE, 0, 1, &[]); // 5: volatile int
        b.record("", PTR, 0, 2, &[]); // 6: char *
        b.record("", RESTRICT, 0, 6, &[]); // 7: char *restrict
        b.record("", CONST, 0, 4, &[]); // 8: const char *const
        let members = b.member_words(&[("i", 1, 0), ("c", 2, 0)]);
        b.record("either", UNION, 2, 4, &members); // 9
        b.record("", UNION, 2, 4, &members); // 10
        let values = b.param_words(&[("RUNNING", 0)]); // name, value
        b.record("state", ENUM, 1, 4, &values); // 11
        let values = b.member_words(&[("BIG", 0, 1)]); // name, low and high 32 bits
        b.record("wide", ENUM64, 1, 8, &values); // 12
        b.record("sock", FWD, 0, 0, &[]); // 13
        b.record("bpf_attr", FWD | KIND_FLAG, 0, 0, &[]); // 14
        let params = b.param_words(&[("", 4)]);
        b.record("", FUNC_PROTO, 1, 1, &params); // 15
        b.record("", PTR, 0, 15, &[]); // 16: int (*)(const char *)
        b.record("user", TYPE_TAG, 0, 1, &[]); // 17: int __user
        b.record("", PTR, 0, 17, &[]); // 18: int __user *
        b.record("", PTR, 0, 0, &[]); // 19: void *
        b.record("state_t", TYPEDEF, 0, 11, &[]); // 20
        let btf = Btf::parse(b.build()).expect("valid BTF");
        let spelled: Vec<String> = (0..=20).map(|id| btf.spell(id)).collect();
        assert_eq!(
            spelled,
            [
                "void",
                "int",
                "char",
                "const char",
                "const char *",
                "volatile int",
                "char *",
                "char *restrict",
                "const char *const",
                "union either",
                "union (anonymous)",
                "enum state",
                "enum wide",
                "struct sock",
                "union bpf_attr",
                "(function)",
                "(function) *",
                "int",
                "int *",
                "void *",
                "state_t",
            ]
        );
        assert_eq!(btf.spell(21), "?", "an id past the last type");
    }

    #[test]
    fn spelling_stops_at_sixteen_levels() {
        let mut b = Builder::new();
        b.record("int", INT, 0, 4, &[32]); // 1
        for id in 1..=16 {
            b.record("", PTR, 0, id, &[]); // 2..=17: id - 1 pointers to int
        }
        // Malformed BTF: records that refer to themselves.
        b.record("", PTR, 0, 18, &[]); // 18
        b.record("", CONST, 0, 19, &[]); // 19
        b.record("tag", TYPE_TAG, 0, 20, &[]); // 20
        b.record("", CONST, 0, 22, &[]); // 21: a const pointer to itself
        b.record("", PTR, 0, 21, &[]); // 22
        let btf = Btf::parse(b.build()).expect("valid layout");
        assert_eq!(btf.spell(16), format!("int{}", " *".repeat(15)));
        assert_eq!(btf.spell(17), format!("?{}", " *".repeat(16)), "int is 16 levels down");
        assert_eq!(btf.spell(18), format!("?{}", " *".repeat(16)));
        assert_eq!(btf.spell(19), format!("{}?", "const ".repeat(16)));
        assert_eq!(btf.spell(20), "?");
        assert_eq!(btf.spell(21), format!("?{}", " *const".repeat(8)));
    }

    /// The running kernel's own BTF (readable by anyone where the kernel publishes it).
    #[test]
    fn the_running_kernel_answers_what_the_programs_read() {
        let Ok(bytes) = std::fs::read(crate::kernel::VMLINUX_BTF) else {
            test_support::skip("this kernel publishes no BTF");
            return;
        };
        let btf = Btf::parse(bytes).expect("the kernel's BTF parses");
        assert!(btf.len() > 10_000);
        let ids = btf.ids_of(&["work_struct", "net_device", "inet6_ifaddr"], Kind::Struct);
        let work = ids["work_struct"];
        assert_eq!(
            btf.offset_of(work, "func").map(|(at, _)| at),
            Some(24),
            "data, entry, func on 64-bit"
        );
        assert_eq!(
            btf.offset_of(ids["net_device"], "name")
                .map(|(at, ty)| (at, btf.size_of(ty)))
                .map(|x| x.1),
            Some(Some(16))
        );
        let (_, addr) = btf.offset_of(ids["inet6_ifaddr"], "addr").expect("addr");
        assert_eq!(btf.size_of(addr), Some(16));
    }
}
