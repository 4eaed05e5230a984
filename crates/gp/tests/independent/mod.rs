//! An independent implementation of the GlobalPlatform computations no specification
//! publishes values for, written from the specifications on RustCrypto's DES, AES and CMAC
//! (not AWS-LC, which the crate uses), so that agreement means something.
#![allow(dead_code)]

use aes::cipher::{BlockEncrypt, KeyInit};
use cmac::Mac;

pub fn des3_ecb(key16: &[u8], block: &[u8]) -> Vec<u8> {
    let c = des::TdesEde2::new_from_slice(key16).unwrap();
    let mut out = Vec::new();
    for b in block.chunks(8) {
        let mut blk = des::cipher::generic_array::GenericArray::clone_from_slice(b);
        c.encrypt_block(&mut blk);
        out.extend_from_slice(&blk);
    }
    out
}

pub fn des_ecb(key8: &[u8], block: &[u8]) -> Vec<u8> {
    let c = des::Des::new_from_slice(key8).unwrap();
    let mut blk = des::cipher::generic_array::GenericArray::clone_from_slice(block);
    c.encrypt_block(&mut blk);
    blk.to_vec()
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

pub fn des3_cbc(key16: &[u8], iv: &[u8], data: &[u8]) -> Vec<u8> {
    let mut prev = iv.to_vec();
    let mut out = Vec::new();
    for b in data.chunks(8) {
        prev = des3_ecb(key16, &xor(b, &prev));
        out.extend_from_slice(&prev);
    }
    out
}

pub fn aes_ecb(key: &[u8], block: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in block.chunks(16) {
        let mut blk = aes::cipher::generic_array::GenericArray::clone_from_slice(b);
        match key.len() {
            16 => aes::Aes128::new_from_slice(key)
                .unwrap()
                .encrypt_block(&mut blk),
            24 => aes::Aes192::new_from_slice(key)
                .unwrap()
                .encrypt_block(&mut blk),
            _ => aes::Aes256::new_from_slice(key)
                .unwrap()
                .encrypt_block(&mut blk),
        }
        out.extend_from_slice(&blk);
    }
    out
}

pub fn cmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match key.len() {
        16 => {
            let mut m = <cmac::Cmac<aes::Aes128> as Mac>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        24 => {
            let mut m = <cmac::Cmac<aes::Aes192> as Mac>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = <cmac::Cmac<aes::Aes256> as Mac>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

pub fn pad(data: &[u8], block: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.push(0x80);
    v.resize(v.len().div_ceil(block) * block, 0);
    v
}

/// ISO/IEC 9797-1 MAC algorithm 3 with DES: single DES over all blocks, the last also
/// decrypted with K2 and encrypted with K1 (written out, not as 3DES).
pub fn retail_mac(key16: &[u8], icv: &[u8], padded: &[u8]) -> Vec<u8> {
    let (k1, k2) = key16.split_at(8);
    let mut h = icv.to_vec();
    for b in padded.chunks(8) {
        h = des_ecb(k1, &xor(b, &h));
    }
    let d = {
        use des::cipher::BlockDecrypt;
        let c = des::Des::new_from_slice(k2).unwrap();
        let mut blk = des::cipher::generic_array::GenericArray::clone_from_slice(&h);
        c.decrypt_block(&mut blk);
        blk.to_vec()
    };
    des_ecb(k1, &d)
}

/// Diversification data of VISA2 (6 KDD bytes 0-1, 4-7) and EMV CPS 1.1 (bytes 4-9).
pub fn diversify_des(master: &[u8], six: &[u8], id: u8) -> Vec<u8> {
    let mut d = six.to_vec();
    d.extend_from_slice(&[0xf0, id]);
    d.extend_from_slice(six);
    d.extend_from_slice(&[0x0f, id]);
    des3_ecb(master, &d)
}
