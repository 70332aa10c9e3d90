//! Register → login → whoami through the gateway, against a real Redis and a real database,
//! each scenario on SQLite and on Postgres.

use futures::future::join_all;
use tonic::{Code, Request};
use tonic_types::StatusExt as _;
use userctl_proto::{
    gateway::v1::{LoginRequest, RegisterRequest, WhoAmIRequest},
    user::v1::{ReadUserRequest, read_user_request::Key},
};
use userctl_tests::{database::TestDatabase, redis::RedisServer, stack::TestStack};

const PASSWORD: &str = "correct horse battery staple";

fn registration(email: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.into(),
        full_name: "Ann Lee".into(),
        password: PASSWORD.into(),
    }
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// Runs each scenario once on SQLite and once on a fresh Postgres database.
macro_rules! on_each_database {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $( #[tokio::test] async fn $scenario() { super::$scenario(TestDatabase::sqlite()).await } )*
        }
        mod postgres {
            use super::*;
            $( #[tokio::test] async fn $scenario() { super::$scenario(TestDatabase::postgres().await).await } )*
        }
    };
}

on_each_database!(
    register_login_and_whoami_return_the_same_account,
    a_duplicate_email_is_already_exists_whatever_its_case,
    concurrent_duplicate_registrations_create_exactly_one_account,
    wrong_password_and_unknown_email_get_the_same_answer,
    invalid_registrations_name_every_bad_field,
    passwords_of_64_and_128_characters_work,
    the_store_answers_not_found_for_unknown_users,
);

async fn register_login_and_whoami_return_the_same_account(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;

    let profile = gateway
        .register(registration(" Ann@Example.COM "))
        .await
        .expect("register")
        .into_inner();
    assert_eq!(profile.email, "ann@example.com");
    assert_eq!(profile.full_name, "Ann Lee");
    assert!(
        profile.created_at > 1_700_000_000,
        "created_at is a recent epoch: {}",
        profile.created_at
    );

    let login = gateway
        .login(LoginRequest {
            email: "ANN@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner();
    assert_eq!(login.token_type, "Bearer");
    assert_eq!(login.access_token.split('.').count(), 3, "a JWT");

    let me = gateway
        .who_am_i(bearer(WhoAmIRequest {}, &login.access_token))
        .await
        .expect("whoami")
        .into_inner();
    assert_eq!(me, profile);
    assert_eq!(db.emails().await, ["ann@example.com"]);
    stack.stop().await;
}

async fn a_duplicate_email_is_already_exists_whatever_its_case(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;
    gateway
        .register(registration("bob@example.com"))
        .await
        .expect("first registration");

    let status = gateway
        .register(registration("BOB@example.com"))
        .await
        .expect_err("duplicate refused");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(
        status.message(),
        "an account with this email already exists"
    );
    assert_eq!(db.emails().await, ["bob@example.com"]);
}

async fn concurrent_duplicate_registrations_create_exactly_one_account(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let gateway = stack.gateway().await;

    let attempts = (0..12).map(|i| {
        let mut gateway = gateway.clone();
        let email = if i % 2 == 0 {
            "race@example.com"
        } else {
            "RACE@example.com"
        };
        async move { gateway.register(registration(email)).await }
    });
    let results = join_all(attempts).await;

    let created = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<Code> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(tonic::Status::code)
        .collect();
    assert_eq!(created, 1, "exactly one registration wins: {results:?}");
    assert!(
        refused.iter().all(|code| *code == Code::AlreadyExists),
        "{refused:?}"
    );
    assert_eq!(db.emails().await, ["race@example.com"]);
}

async fn wrong_password_and_unknown_email_get_the_same_answer(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;
    gateway
        .register(registration("carol@example.com"))
        .await
        .expect("register");

    let wrong_password = gateway
        .login(LoginRequest {
            email: "carol@example.com".into(),
            password: "not the password".into(),
        })
        .await
        .expect_err("wrong password refused");
    let unknown_email = gateway
        .login(LoginRequest {
            email: "nobody@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect_err("unknown email refused");
    for status in [&wrong_password, &unknown_email] {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "invalid email or password");
    }
}

async fn invalid_registrations_name_every_bad_field(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;

    let status = gateway
        .register(RegisterRequest {
            email: "not-an-email".into(),
            full_name: "".into(),
            password: "short".into(),
        })
        .await
        .expect_err("invalid registration refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("field violations in the details")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["email", "full_name", "password"]);
    assert!(
        status
            .message()
            .contains("email: must look like name@example.com"),
        "{}",
        status.message()
    );
    assert!(db.emails().await.is_empty(), "nothing written");
}

async fn passwords_of_64_and_128_characters_work(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut gateway = stack.gateway().await;

    for (email, password) in [
        ("p64@example.com", "p".repeat(64)),
        ("p128@example.com", "é".repeat(128)),
    ] {
        let request = RegisterRequest {
            email: email.into(),
            full_name: "Long".into(),
            password: password.clone(),
        };
        gateway
            .register(request)
            .await
            .expect("long password accepted");
        gateway
            .login(LoginRequest {
                email: email.into(),
                password,
            })
            .await
            .expect("and logs in");
    }
}

async fn the_store_answers_not_found_for_unknown_users(db: TestDatabase) {
    let redis = RedisServer::start().await;
    let stack = TestStack::start(&db, &redis).await;
    let mut store = stack.store().await;
    for key in [Key::Id(4242), Key::Email("ghost@example.com".into())] {
        let status = store
            .read_user(ReadUserRequest {
                key: Some(key),
                session_id: String::new(),
            })
            .await
            .expect_err("unknown user");
        assert_eq!(status.code(), Code::NotFound);
    }
    let status = store
        .read_user(ReadUserRequest {
            key: None,
            session_id: String::new(),
        })
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::InvalidArgument);
}
