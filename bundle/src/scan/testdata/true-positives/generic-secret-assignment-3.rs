// FAKE value for the secret scanner's tests.
const API_KEY: &str = "Hj6tY2mP9qR4wX8zC3vB";

fn client() -> Client {
    Client::new(API_KEY)
}
