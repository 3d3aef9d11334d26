//! Times Y^T X on an XC file: `cargo run --release --example spgemm_time -- PATH [threads]`.
use std::time::Instant;

use xmrrs_core::io::xc::{read_file, ReadOptions};
use xmrrs_core::{parallel, sparse};

fn main() -> xmrrs_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map_or("../shared/data/debian/deps/train.txt", |s| s.as_str());
    let threads = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1i64);
    let d = read_file(
        std::path::Path::new(path),
        &ReadOptions {
            header: true,
            ..Default::default()
        },
    )?;
    let mut x = d.x;
    sparse::normalize_rows_l2(&mut x);
    parallel::install(Some(threads), || -> xmrrs_core::Result<()> {
        let yt = sparse::transpose(&d.y.view())?;
        for _ in 0..3 {
            let t = Instant::now();
            let z = sparse::spgemm(&yt.view(), &x.view())?;
            println!("spgemm {:.4} s nnz {}", t.elapsed().as_secs_f64(), z.nnz());
            let t = Instant::now();
            let zt = sparse::transpose(&z.view())?;
            println!(
                "transpose of the product {:.4} s nnz {}",
                t.elapsed().as_secs_f64(),
                zt.nnz()
            );
        }
        Ok(())
    })?
}
