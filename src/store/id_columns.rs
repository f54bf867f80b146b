//! How the identifier types are bound and read: as the text columns they always were. The
//! store trusts what it reads back (only checked ids are written), so reading a
//! [`TenantId`] does not check it again.

use crate::ids::{ObjectId, TenantId};
use sqlx::any::AnyTypeInfo;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Any, Database, Decode, Encode, Type};

macro_rules! text_column {
    ($name:ty, $from_string:expr) => {
        impl Type<Any> for $name {
            fn type_info() -> AnyTypeInfo {
                <str as Type<Any>>::type_info()
            }
        }

        impl Encode<'_, Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <Any as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as Encode<'_, Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Any> for $name {
            fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                <String as Decode<'r, Any>>::decode(value).map($from_string)
            }
        }
    };
}

text_column!(TenantId, TenantId::from_trusted);
text_column!(ObjectId, ObjectId::from);
