//! One Keras layer's `config` object, read by the layer kinds' `FromKeras` (each kind owns the mapping of
//! its Keras keys) and written by their `Layer::keras_config`: the helpers both directions share.

use serde_json::{json, Map, Value};

use crate::model::Activation;

/// A Keras layer config being read: its class, its name and its keys. Errors are plain text; the
/// importer prefixes the layer's name and class.
pub struct LayerConfig<'a> {
    pub class: &'a str,
    pub name: &'a str,
    pub map: &'a Map<String, Value>,
}

impl<'a> LayerConfig<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A whole number >= 1.
    pub fn count(&self, key: &str) -> Result<usize, String> {
        match self.get(key).and_then(Value::as_u64) {
            Some(n) if n >= 1 => {
                usize::try_from(n).map_err(|_| format!("{key} = {n} is too large"))
            }
            _ => Err(format!(
                "{key} must be a whole number >= 1, got {}",
                self.show(key)
            )),
        }
    }

    /// A square size: `3` or `[3, 3]` (clampnet's layers have square windows).
    pub fn square(&self, key: &str) -> Result<usize, String> {
        let v = self.get(key).ok_or_else(|| format!("{key} is missing"))?;
        let n = match v {
            Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
            Value::Array(a) if a.len() == 2 => {
                return Err(format!(
                    "{key} = {v}: clampnet supports square sizes only, such as [3, 3]"
                ))
            }
            Value::Array(_) => None,
            v => v.as_u64(),
        };
        match n {
            Some(n) if n >= 1 => {
                usize::try_from(n).map_err(|_| format!("{key} = {v} is too large"))
            }
            _ => Err(format!(
                "{key} must be a whole number >= 1 or a pair, got {v}"
            )),
        }
    }

    /// A string value, or `default` when absent.
    pub fn string(&self, key: &str, default: &'a str) -> Result<&'a str, String> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(format!("{key} must be a string, got {v}")),
        }
    }

    /// The key is absent, null, or one of `allowed` (which clampnet implements); else an error that
    /// says what is supported.
    pub fn only(&self, key: &str, allowed: &[Value]) -> Result<(), String> {
        match self.get(key) {
            None => Ok(()),
            Some(v) if allowed.contains(v) => Ok(()),
            Some(v) if allowed.is_empty() => Err(format!(
                "{key} = {v} is not supported (clampnet trains the layer without it)"
            )),
            Some(v) => Err(format!(
                "{key} = {v} is not supported (clampnet trains {key} = {})",
                allowed
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        }
    }

    /// `padding`: "valid" or "same".
    pub fn padding(&self) -> Result<crate::model::Padding, String> {
        match self.string("padding", "valid")? {
            "valid" => Ok(crate::model::Padding::Valid),
            "same" => Ok(crate::model::Padding::Same),
            p => Err(format!(
                "padding = \"{p}\" is not supported (valid or same)"
            )),
        }
    }

    /// `activation`: a name, or `{ "class_name": .., "config": "relu" }`; `allowed` lists what the
    /// layer trains.
    pub fn activation(&self, allowed: &[Activation]) -> Result<Activation, String> {
        let name = match self.get("activation") {
            None => "linear",
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => match (o.get("config"), o.get("class_name")) {
                (Some(Value::String(s)), _) => s.as_str(),
                (_, Some(Value::String(s))) => s.as_str(),
                _ => {
                    return Err(format!(
                        "activation {} is not a known form",
                        Value::Object(o.clone())
                    ))
                }
            },
            Some(v) => return Err(format!("activation {v} is not a known form")),
        };
        let a = match name {
            "linear" | "Linear" => Some(Activation::Linear),
            "relu" | "ReLU" => Some(Activation::Relu),
            "softmax" | "Softmax" => Some(Activation::Softmax),
            "tanh" => Some(Activation::Tanh),
            "sigmoid" => Some(Activation::Sigmoid),
            "elu" => Some(Activation::Elu),
            "leaky_relu" => Some(Activation::LeakyRelu),
            _ => None,
        };
        match a {
            Some(a) if allowed.contains(&a) => Ok(a),
            _ => Err(format!(
                "activation \"{name}\" is not supported here (supported: {})",
                allowed
                    .iter()
                    .map(|a| activation_name(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn show(&self, key: &str) -> String {
        self.map
            .get(key)
            .map_or("nothing".into(), |v| v.to_string())
    }
}

/// Keras' name of an activation.
pub fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Linear => "linear",
        Activation::Relu => "relu",
        Activation::Softmax => "softmax",
        Activation::Tanh => "tanh",
        Activation::Sigmoid => "sigmoid",
        Activation::Elu => "elu",
        Activation::LeakyRelu => "leaky_relu",
    }
}

/// A Keras object reference, `{"module", "class_name", "config", "registered_name"}`.
pub fn object(module: &str, class: &str, config: Value) -> Value {
    json!({ "module": module, "class_name": class, "config": config, "registered_name": null })
}

/// The keys every Keras layer config has, for a layer `name`.
pub fn base(name: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("trainable".into(), json!(true));
    m.insert(
        "dtype".into(),
        object("keras", "DTypePolicy", json!({ "name": "float32" })),
    );
    m
}

/// Keras' default initializers of a kernel and a bias.
pub fn default_initializers(m: &mut Map<String, Value>) {
    m.insert(
        "kernel_initializer".into(),
        object(
            "keras.initializers",
            "GlorotUniform",
            json!({ "seed": null }),
        ),
    );
    m.insert(
        "bias_initializer".into(),
        object("keras.initializers", "Zeros", json!({})),
    );
}

/// A layer kind read from its Keras config.
pub trait FromKeras: Sized {
    /// Keras' class name: "Conv2D", "MaxPooling2D", ...
    const CLASS: &'static str;

    /// Other Keras classes this kind reads (`LayerConfig::class` says which)
    const ALSO: &'static [&'static str] = &[];

    /// The layer from its Keras config, or what clampnet cannot train in it.
    fn from_keras(c: &LayerConfig) -> Result<Self, String>;
}
