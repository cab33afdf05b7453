//! A seeded SplitMix64: fast, tiny, and the same sequence on every machine,
//! so a failing input is reproduced from its seed alone.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The generator for input number `index` of a run seeded with `seed`:
    /// every input stands alone, so any one of them can be replayed.
    pub fn for_input(seed: u64, index: u64) -> Self {
        let mut rng = Rng(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93));
        rng.next();
        rng
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 0..n; n must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// lo..=hi.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability 1 in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    /// Any Unicode scalar value, biased towards the interesting planes.
    pub fn char(&mut self) -> char {
        let code = match self.below(6) {
            0 => self.below(0x100) as u32,
            1 => 0x2000 + self.below(0x80) as u32,
            2 => self.below(0x11_0000) as u32,
            3 => 0x80 + self.below(0x20) as u32,
            _ => 0x20 + self.below(0x5f) as u32,
        };
        char::from_u32(code).unwrap_or('\u{fffd}')
    }
}
