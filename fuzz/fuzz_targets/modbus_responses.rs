//! Bytes a Modbus slave might answer with (RTU and TCP), through tokio-modbus's client decoding as
//! gatehouse uses it: a discrete-input read must end in a value or an error, never a panic or a
//! hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_modbus::client::Reader;

fuzz_target!(|data: &[u8]| {
    let Some((&which, answer)) = data.split_first() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client_side, mut slave_side) = tokio::io::duplex(4096);
        let answer = answer.to_vec();
        tokio::spawn(async move {
            let mut req = [0u8; 64];
            let _ = slave_side.read(&mut req).await;
            let _ = slave_side.write_all(&answer).await;
        });
        let mut ctx = if which % 2 == 0 {
            tokio_modbus::client::rtu::attach_slave(client_side, tokio_modbus::Slave(1))
        } else {
            tokio_modbus::client::tcp::attach_slave(client_side, tokio_modbus::Slave(1))
        };
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            ctx.read_discrete_inputs(0, 4),
        )
        .await;
    });
});
