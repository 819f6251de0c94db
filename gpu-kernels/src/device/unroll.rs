//! `unroll!(N, |i| { ... })`: repeats a block with `i` bound to 0..N (N = 1, 2, 4, 8 or 16) so that per-thread
//! register arrays indexed by `i` stay in registers (LLVM does not always fully unroll large loop bodies,
//! and a dynamically indexed array lives in local memory).
macro_rules! unroll {
    (1, |$i:ident| $body:block) => {{
        let $i: usize = 0;
        $body
    }};
    (2, |$i:ident| $body:block) => {{
        {
            let $i: usize = 0;
            $body
        }
        {
            let $i: usize = 1;
            $body
        }
    }};
    (4, |$i:ident| $body:block) => {{
        $crate::device::unroll::unroll!(2, |$i| $body);
        {
            let $i: usize = 2;
            $body
        }
        {
            let $i: usize = 3;
            $body
        }
    }};
    (8, |$i:ident| $body:block) => {{
        $crate::device::unroll::unroll!(4, |$i| $body);
        {
            let $i: usize = 4;
            $body
        }
        {
            let $i: usize = 5;
            $body
        }
        {
            let $i: usize = 6;
            $body
        }
        {
            let $i: usize = 7;
            $body
        }
    }};
    (16, |$i:ident| $body:block) => {{
        $crate::device::unroll::unroll!(2, |hi| {
            $crate::device::unroll::unroll!(8, |lo| {
                let $i: usize = 8 * hi + lo;
                $body
            });
        });
    }};
}
pub(crate) use unroll;
