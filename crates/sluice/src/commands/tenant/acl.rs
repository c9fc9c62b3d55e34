//! The Kafka admin calls of `sluice tenant` that rust-rdkafka does not wrap,
//! through librdkafka's C API: DescribeAcls then CreateAcls (`add`), DeleteAcls
//! (`remove`), and AlterUserScramCredentials (a tenant's SCRAM password). Run
//! only in the `tenant acl-apply` child process (see `commands::tenant`).

use std::ffi::{CStr, CString};
use std::ptr;

use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

const TIMEOUT_MS: i32 = 15_000;

/// Starts the error of a call the brokers refused because they have no
/// authorizer (SECURITY_DISABLED): ACLs are not supported there.
pub const UNSUPPORTED: &str = "no ACL support: ";

fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings valid while the event lives.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

struct Queue(*mut rd::rd_kafka_queue_t);
impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new, destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

struct Event(*mut rd::rd_kafka_event_t);
impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: polled from our queue, destroyed once.
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

fn poll(q: &Queue, what: &str) -> Result<Event, String> {
    // SAFETY: valid queue.
    let ev = unsafe { rd::rd_kafka_queue_poll(q.0, TIMEOUT_MS) };
    if ev.is_null() {
        return Err(format!(
            "{what}: no reply from the brokers within {} s",
            TIMEOUT_MS / 1000
        ));
    }
    let ev = Event(ev);
    // SAFETY: valid event.
    let err = unsafe { rd::rd_kafka_event_error(ev.0) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: valid event.
        let msg = cstr(unsafe { rd::rd_kafka_event_error_string(ev.0) });
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_SECURITY_DISABLED {
            return Err(format!("{UNSUPPORTED}{what}: {msg}"));
        }
        return Err(format!("{what}: the brokers refused: {msg}"));
    }
    Ok(ev)
}

type Binding = (
    rd::rd_kafka_ResourceType_t,
    String,
    rd::rd_kafka_ResourcePatternType_t,
    rd::rd_kafka_AclOperation_t,
);

/// The bindings a tenant gets, in the order of `grant::acl_bindings`.
fn wanted(id: &str, topic: &str) -> Vec<Binding> {
    use rd::rd_kafka_AclOperation_t::*;
    use rd::rd_kafka_ResourcePatternType_t::*;
    use rd::rd_kafka_ResourceType_t::*;
    let group = format!("{id}-");
    vec![
        (
            RD_KAFKA_RESOURCE_TOPIC,
            topic.to_owned(),
            RD_KAFKA_RESOURCE_PATTERN_LITERAL,
            RD_KAFKA_ACL_OPERATION_READ,
        ),
        (
            RD_KAFKA_RESOURCE_TOPIC,
            topic.to_owned(),
            RD_KAFKA_RESOURCE_PATTERN_LITERAL,
            RD_KAFKA_ACL_OPERATION_DESCRIBE,
        ),
        (
            RD_KAFKA_RESOURCE_GROUP,
            group.clone(),
            RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
            RD_KAFKA_ACL_OPERATION_READ,
        ),
        (
            RD_KAFKA_RESOURCE_GROUP,
            group,
            RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
            RD_KAFKA_ACL_OPERATION_DESCRIBE,
        ),
    ]
}

/// `rd_kafka_AclBinding_new` and `rd_kafka_AclBindingFilter_new` (same signature).
type BindingCtor = unsafe extern "C" fn(
    rd::rd_kafka_ResourceType_t,
    *const std::os::raw::c_char,
    rd::rd_kafka_ResourcePatternType_t,
    *const std::os::raw::c_char,
    *const std::os::raw::c_char,
    rd::rd_kafka_AclOperation_t,
    rd::rd_kafka_AclPermissionType_t,
    *mut std::os::raw::c_char,
    usize,
) -> *mut rd::rd_kafka_AclBinding_t;

/// Bindings (or filters) we own, destroyed on drop.
struct Bindings(Vec<*mut rd::rd_kafka_AclBinding_t>);
impl Drop for Bindings {
    fn drop(&mut self) {
        // SAFETY: made by `tenant_bindings`, destroyed once; librdkafka copied them.
        unsafe { rd::rd_kafka_AclBinding_destroy_array(self.0.as_mut_ptr(), self.0.len()) }
    }
}

/// The tenant's ALLOW bindings for `User:ID` on any host ([`wanted`]), made by
/// `ctor` (bindings for CreateAcls, filters for DeleteAcls); `what` names the
/// call in errors.
fn tenant_bindings(
    id: &str,
    topic: &str,
    what: &str,
    ctor: BindingCtor,
) -> Result<Bindings, String> {
    let principal = CString::new(format!("User:{id}")).map_err(|e| e.to_string())?;
    let any_host = CString::new("*").expect("no NUL");
    let mut errstr = [0 as std::os::raw::c_char; 512];
    let mut out = Bindings(Vec::new());
    for (rt, name, pt, op) in &wanted(id, topic) {
        let name = CString::new(name.as_str()).map_err(|e| e.to_string())?;
        // SAFETY: valid C strings and buffer; librdkafka copies them.
        let b = unsafe {
            ctor(
                *rt,
                name.as_ptr(),
                *pt,
                principal.as_ptr(),
                any_host.as_ptr(),
                *op,
                rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        if b.is_null() {
            return Err(format!("{what}: {}", cstr(errstr.as_ptr())));
        }
        out.0.push(b);
    }
    Ok(out)
}

pub fn apply(
    admin: &AdminClient<DefaultClientContext>,
    id: &str,
    topic: &str,
) -> Result<Vec<String>, String> {
    use rd::rd_kafka_AclOperation_t::*;
    use rd::rd_kafka_ResourcePatternType_t::*;
    use rd::rd_kafka_ResourceType_t::*;
    let rk = admin.inner().native_ptr();
    let mut errstr = [0 as std::os::raw::c_char; 512];
    // SAFETY: rk is a live client handle for the duration of this function.
    let q = Queue(unsafe { rd::rd_kafka_queue_new(rk) });

    // Probe: DescribeAcls on the topic. A broker without ACL support fails here.
    let name = CString::new(topic).map_err(|e| e.to_string())?;
    // SAFETY: all pointers are valid C strings or null where allowed.
    let filter = unsafe {
        rd::rd_kafka_AclBindingFilter_new(
            RD_KAFKA_RESOURCE_TOPIC,
            name.as_ptr(),
            RD_KAFKA_RESOURCE_PATTERN_ANY,
            ptr::null(),
            ptr::null(),
            RD_KAFKA_ACL_OPERATION_ANY,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ANY,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if filter.is_null() {
        return Err(format!("DescribeAcls: {}", cstr(errstr.as_ptr())));
    }
    // SAFETY: filter and queue are valid; options null = defaults.
    unsafe { rd::rd_kafka_DescribeAcls(rk, filter, ptr::null(), q.0) };
    let described = poll(&q, "DescribeAcls");
    // SAFETY: filter was created above and is no longer used by librdkafka.
    unsafe { rd::rd_kafka_AclBinding_destroy(filter) };
    described?;

    let wanted = wanted(id, topic);
    let mut bindings = tenant_bindings(id, topic, "CreateAcls", rd::rd_kafka_AclBinding_new)?;
    // SAFETY: bindings are valid; librdkafka copies them.
    unsafe {
        rd::rd_kafka_CreateAcls(
            rk,
            bindings.0.as_mut_ptr(),
            bindings.0.len(),
            ptr::null(),
            q.0,
        )
    };
    let created = poll(&q, "CreateAcls");
    drop(bindings);
    let ev = created?;
    // SAFETY: a CreateAcls result event.
    let res = unsafe { rd::rd_kafka_event_CreateAcls_result(ev.0) };
    if res.is_null() {
        return Err("CreateAcls: unexpected reply".into());
    }
    let mut n = 0usize;
    // SAFETY: valid result; array lives as long as the event.
    let acls = unsafe { rd::rd_kafka_CreateAcls_result_acls(res, &mut n) };
    if n != wanted.len() {
        return Err(format!(
            "CreateAcls: the brokers answered {n} results for {} bindings",
            wanted.len()
        ));
    }
    let texts = super::grant::acl_bindings(id, topic);
    let mut lines = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        // SAFETY: i < n.
        let err = unsafe { rd::rd_kafka_acl_result_error(*acls.add(i)) };
        if !err.is_null() {
            // SAFETY: valid error object owned by the result.
            let (code, msg) = unsafe {
                (
                    rd::rd_kafka_error_code(err),
                    cstr(rd::rd_kafka_error_string(err)),
                )
            };
            if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_SECURITY_DISABLED {
                return Err(format!("{UNSUPPORTED}CreateAcls: {msg}"));
            }
            return Err(format!("CreateAcls: the brokers refused `{text}`: {msg}"));
        }
        lines.push(format!("granted {text}"));
    }
    Ok(lines)
}

/// DeleteAcls of exactly the bindings `apply` creates (ALLOW, any host); returns
/// a line per binding. Bindings already gone are not an error.
pub fn revoke(
    admin: &AdminClient<DefaultClientContext>,
    id: &str,
    topic: &str,
) -> Result<Vec<String>, String> {
    let rk = admin.inner().native_ptr();
    let mut filters = tenant_bindings(id, topic, "DeleteAcls", rd::rd_kafka_AclBindingFilter_new)?;
    // SAFETY: rk is live for this call.
    let q = Queue(unsafe { rd::rd_kafka_queue_new(rk) });
    // SAFETY: filters are valid; librdkafka copies them.
    unsafe {
        rd::rd_kafka_DeleteAcls(
            rk,
            filters.0.as_mut_ptr(),
            filters.0.len(),
            ptr::null(),
            q.0,
        )
    };
    let deleted = poll(&q, "DeleteAcls");
    drop(filters);
    let ev = deleted?;
    // SAFETY: a DeleteAcls result event.
    let res = unsafe { rd::rd_kafka_event_DeleteAcls_result(ev.0) };
    if res.is_null() {
        return Err("DeleteAcls: unexpected reply".into());
    }
    let mut n = 0usize;
    // SAFETY: valid result; the array lives as long as the event.
    let responses = unsafe { rd::rd_kafka_DeleteAcls_result_responses(res, &mut n) };
    let texts = super::grant::acl_bindings(id, topic);
    let mut lines = Vec::new();
    for (i, text) in texts.iter().enumerate().take(n) {
        // SAFETY: i < n.
        let r = unsafe { *responses.add(i) };
        // SAFETY: valid response owned by the result.
        let err = unsafe { rd::rd_kafka_DeleteAcls_result_response_error(r) };
        if !err.is_null() {
            // SAFETY: valid error object owned by the result.
            let (code, msg) = unsafe {
                (
                    rd::rd_kafka_error_code(err),
                    cstr(rd::rd_kafka_error_string(err)),
                )
            };
            if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_SECURITY_DISABLED {
                return Err(format!("{UNSUPPORTED}DeleteAcls: {msg}"));
            }
            return Err(format!(
                "DeleteAcls: the brokers refused to delete `{text}`: {msg}"
            ));
        }
        let mut matched = 0usize;
        // SAFETY: valid response.
        unsafe { rd::rd_kafka_DeleteAcls_result_response_matching_acls(r, &mut matched) };
        lines.push(if matched > 0 {
            format!("revoked {text}")
        } else {
            format!("absent {text}")
        });
    }
    Ok(lines)
}

/// AlterUserScramCredentials: upsert a SCRAM-SHA-512 credential (8192
/// iterations, a random salt) for user `id` with `password`.
pub fn set_scram(
    admin: &AdminClient<DefaultClientContext>,
    id: &str,
    password: &str,
) -> Result<String, String> {
    let rk = admin.inner().native_ptr();
    let user = CString::new(id).map_err(|e| e.to_string())?;
    let mut salt = [0u8; 32];
    random_bytes(&mut salt).map_err(|e| format!("AlterUserScramCredentials: no salt: {e}"))?;
    // SAFETY: valid pointers and lengths; librdkafka copies them.
    let alt = unsafe {
        rd::rd_kafka_UserScramCredentialUpsertion_new(
            user.as_ptr(),
            rd::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
            8192,
            password.as_ptr(),
            password.len(),
            salt.as_ptr(),
            salt.len(),
        )
    };
    if alt.is_null() {
        return Err("AlterUserScramCredentials: bad arguments".into());
    }
    let mut alts = [alt];
    // SAFETY: rk is live for this call.
    let q = Queue(unsafe { rd::rd_kafka_queue_new(rk) });
    // SAFETY: a valid alteration; librdkafka copies it.
    unsafe { rd::rd_kafka_AlterUserScramCredentials(rk, alts.as_mut_ptr(), 1, ptr::null(), q.0) };
    let altered = poll(&q, "AlterUserScramCredentials");
    // SAFETY: ours, no longer used.
    unsafe { rd::rd_kafka_UserScramCredentialAlteration_destroy_array(alts.as_mut_ptr(), 1) };
    let ev = altered?;
    // SAFETY: an AlterUserScramCredentials result event.
    let res = unsafe { rd::rd_kafka_event_AlterUserScramCredentials_result(ev.0) };
    if res.is_null() {
        return Err("AlterUserScramCredentials: unexpected reply".into());
    }
    let mut n = 0usize;
    // SAFETY: valid result; the array lives as long as the event.
    let responses = unsafe { rd::rd_kafka_AlterUserScramCredentials_result_responses(res, &mut n) };
    if n != 1 {
        return Err(format!("AlterUserScramCredentials: {n} results for 1 user"));
    }
    // SAFETY: n == 1.
    let err = unsafe { rd::rd_kafka_AlterUserScramCredentials_result_response_error(*responses) };
    // SAFETY: a valid error object owned by the result, when not null.
    if !err.is_null()
        && unsafe { rd::rd_kafka_error_code(err) }
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    {
        // SAFETY: as above.
        let msg = cstr(unsafe { rd::rd_kafka_error_string(err) });
        return Err(format!(
            "AlterUserScramCredentials: the brokers refused: {msg}"
        ));
    }
    Ok(format!("credential SCRAM-SHA-512 set for User:{id}"))
}

/// Fill `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}
